"""Soundscapes as video files: a picture track cut from real videos, the soundscape as its sound.

``avtag prepare soundscapes --video-dir DIR`` also writes each validation and test soundscape
as ``video/{split}/{id}.mp4``, so that the audio-visual path (``avtag eval-batch`` on both
branches, ``avtag fusion fit``, ``--fusion``) runs on the same clips as the audio path.

THE PICTURE IS NOT THE SOURCE OF THE SOUND. ESC-50 has no video, so the picture of each
soundscape is a 10 s stretch of one of the real videos in ``DIR``, chosen at random; it
exercises the audio-visual seam (decoding, the video branch, fusion over the model's own
classes), and the fusion weights tuned on such clips are expected to favour the audio branch.
Nothing here may be read as an audio-visual result.

Our documented choices:
- Which picture goes with which soundscape: for each clip, one video of ``DIR`` (the files with
  a video stream, in name order) drawn uniformly, and a start drawn uniformly over the
  positions where the clip fits (a video shorter than the clip is looped), from a random
  stream of its own derived from ``seed`` and the split, so the audio mixes are the same with
  and without ``--video-dir``.
- Small and quick: one frame every 2 s (:data:`VIDEO_FPS`; the video branch's embedded
  default would analyse 3 per second, here it gets the 5 frames there are and DS3 picks 4 of
  them). The recognizer's cost per clip is its cost per frame times the frames, and it is
  most of the audio-visual steps' time (measured in ``tests/test_workflow.py``); the picture is
  unrelated to the sound, so more frames would only cost more. At most
  :data:`VIDEO_MAX_SIDE` pixels on the longer side, H.264 (libx264, ``ultrafast``, CRF
  :data:`VIDEO_CRF`) with the soundscape as a mono AAC track (FFmpeg's default bit rate; decoded back within
  about 0.002 RMS of the WAV) at its own sample rate. Each
  source video is decoded once, and a clip encodes in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from avtag.atomic import atomic_write
from avtag.errors import InputFileError

VIDEO_FPS = 0.5  # frames per second of the written picture track (our documented choice)
VIDEO_MAX_SIDE = 320  # pixels on the longer side (our documented choice)
VIDEO_CRF = 30  # libx264 constant rate factor: small files, the picture stays recognisable
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})


@dataclass(frozen=True)
class PictureSource:
    """One real video's frames at :data:`VIDEO_FPS` (RGB uint8, even frame size)."""

    name: str
    frames: np.ndarray  # (N, H, W, 3)


def list_picture_sources(video_dir: str | Path) -> list[Path]:
    """The files of ``video_dir`` with a video stream, in name order (one line if there are none)."""
    from avtag.video.decode import probe

    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise InputFileError("no such folder of videos (--video-dir)", video_dir)
    found = []
    for path in sorted(p for p in video_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
        try:
            if probe(path).has_video:
                found.append(path)
        except InputFileError:  # an unreadable file is not a picture source
            continue
    if not found:
        raise InputFileError("holds no readable video file (--video-dir)", video_dir)
    return found


class PictureTracks:
    """The picture of each soundscape, cut from the videos of a folder (see the module doc)."""

    def __init__(self, video_dir: str | Path, seconds: float) -> None:
        self.paths = list_picture_sources(video_dir)
        self.seconds = float(seconds)
        self.num_frames = max(1, int(round(self.seconds * VIDEO_FPS)))
        self.fps = VIDEO_FPS
        self._decoded: dict[Path, PictureSource] = {}

    def _source(self, path: Path) -> PictureSource:
        if path not in self._decoded:
            from avtag.video.decode import decode_video

            frames = decode_video(path, fps=VIDEO_FPS, max_side=VIDEO_MAX_SIDE, with_audio=False).frames
            height, width = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
            self._decoded[path] = PictureSource(path.name, np.ascontiguousarray(frames[:, :height, :width]))
        return self._decoded[path]

    def draw(self, rng: np.random.Generator) -> tuple[PictureSource, int]:
        """A source video and the first frame of the clip's picture in it."""
        source = self._source(self.paths[int(rng.integers(len(self.paths)))])
        start = int(rng.integers(max(1, len(source.frames) - self.num_frames + 1)))
        return source, start

    def frames(self, source: PictureSource, start: int) -> np.ndarray:
        """``num_frames`` frames from ``start`` (looping a short video)."""
        positions = (start + np.arange(self.num_frames)) % len(source.frames)
        return source.frames[positions]


def write_clip_video(path: str | Path, frames: np.ndarray, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``frames`` (N, H, W, 3 uint8, even H and W) at :data:`VIDEO_FPS` with ``audio``
    (mono float32 in [-1, 1]) as an H.264/AAC mp4, atomically."""
    import av

    path = Path(path)
    with atomic_write(path, "wb") as handle:
        with av.open(handle, "w", format="mp4") as container:
            rate = Fraction(VIDEO_FPS).limit_denominator(1000)
            video = container.add_stream("libx264", rate=rate)
            video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
            video.pix_fmt = "yuv420p"
            video.options = {"preset": "ultrafast", "crf": str(VIDEO_CRF)}
            sound = container.add_stream("aac", rate=int(sample_rate))
            sound.layout = "mono"
            sound.options = {"aac_coder": "fast"}  # FFmpeg's default "twoloop" is slow on tonal sound
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
            samples = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32).reshape(1, -1)
            block = 1024  # one AAC frame per block
            for begin in range(0, samples.shape[1], block):
                piece = av.AudioFrame.from_ndarray(samples[:, begin:begin + block], format="fltp", layout="mono")
                piece.sample_rate, piece.pts = int(sample_rate), begin
                piece.time_base = Fraction(1, int(sample_rate))
                container.mux(sound.encode(piece))
            container.mux(sound.encode(None))
    return path


def picture_stream(seed: int, split_index: int) -> np.random.Generator:
    """The random stream of one split's pictures: its own, so the audio mixes never change."""
    return np.random.default_rng([seed, split_index, 7])


__all__: Sequence[str] = [
    "PictureSource", "PictureTracks", "VIDEO_FPS", "VIDEO_MAX_SIDE", "list_picture_sources", "picture_stream",
    "write_clip_video",
]
