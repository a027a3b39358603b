"""Long files read a chunk of windows at a time, so memory stays bounded by the chunk.

Videos longer than ``STREAM_MIN_SECONDS`` (frames: :func:`open_stream`; their own sound track:
:class:`avtag.video.sound_track.SoundTrackStream`) and audio files longer than
``AUDIO_STREAM_MIN_SECONDS`` (samples: :class:`AudioStream`, soundfile formats) are read window by
window. A long file's audio is still decoded whole when a report is asked for (its spectrogram
needs the whole track; it is averaged down, see :func:`avtag.inference.pipeline._spectrogram`).

``decode_video`` returns every sampled frame of a file at once: +~4 MiB per second of 720p at
3 frames/s, 5.7 GB for a 30-minute 640x360 video. For a video longer than
``STREAM_MIN_SECONDS``, :func:`open_stream` indexes the file once (frame timestamps, the frames
to sample at the branch's rate) and decodes the sound track, and :func:`run_video_stream`
decodes the frames of ``CHUNK_WINDOWS`` consecutive windows at a time, runs the video branch on
them (:func:`avtag.inference.branches.run_video_windows`) and keeps only what the output needs:
per-window probabilities, predictions (links) and the key frames. Frames in the overlap of two
chunks are recognised twice (one hop in ``CHUNK_WINDOWS`` windows); results are the same as
decoding the whole file (each window sees the same frames).

Our documented choices: 60 s (six 10 s windows) as the video threshold, eight windows a chunk
(45 s of video at a hop of 5 s), 10 minutes as the audio threshold. A file whose index decord
(or soundfile) cannot read falls back to the whole-file decoder, which handles truncated and odd
files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

STREAM_MIN_SECONDS = 60.0
CHUNK_WINDOWS = 8
SILENCE_PEAK = 1e-4  # -80 dBFS, as avtag.video.decode


@dataclass
class StreamedVideo:
    """What :func:`open_stream` learnt about a video; frames are decoded on demand."""

    path: Path
    reader: Any  # decord.VideoReader at the decode size
    indices: np.ndarray  # frames sampled at the branch's rate
    times: np.ndarray  # their presentation times
    duration: float
    audio: Any  # a SoundTrackStream (read window by window), the whole track (np.ndarray), or None
    sample_rate: int | None
    audio_is_silent: bool  # for a SoundTrackStream: known once read (its ``peak``)
    notes: list[str] = field(default_factory=list)

    def frames_between(self, start: float, end: float) -> SimpleNamespace:
        """The sampled frames with ``start <= time < end`` (at least the nearest one)."""
        inside = np.flatnonzero((self.times >= start - 1e-6) & (self.times < end - 1e-6))
        if len(inside) == 0:
            inside = np.array([int(np.argmin(np.abs(self.times - (start + end) / 2)))])
        frames = self.reader.get_batch(self.indices[inside].tolist()).asnumpy()
        # decord keeps decoding ahead of the last frame read while the caller works, filling memory
        # (dmlc/decord issues #157, #197, #208); a seek to the start stops it.
        self.reader.seek(0)
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        return SimpleNamespace(frames=np.ascontiguousarray(frames, dtype=np.uint8), times=self.times[inside])


def open_stream(path: str | Path, fps: float | None, max_side: int | None, with_audio: bool,
                audio_sample_rate: int | None, stream_audio: bool = True) -> StreamedVideo | None:
    """Index ``path`` for chunked decoding (``None``: use the whole-file decoder instead).

    The sound track is a :class:`~avtag.video.sound_track.SoundTrackStream` (read window by
    window) unless ``stream_audio`` is false (a report's spectrogram needs the whole track).
    """
    import decord

    from avtag.video.decode import _pick_frames, decode_audio, probe, resized_shape
    from avtag.video.sound_track import SoundTrackStream

    path = Path(path)
    info = probe(path)
    if not info.has_video or not info.width or not info.height:
        return None
    width, height = resized_shape(info.width, info.height, max_side)
    decord.logging.set_level(decord.logging.QUIET)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height)
        if len(reader) == 0:
            return None
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))), dtype=np.float64)
    except (decord.DECORDError, RuntimeError, ValueError, IndexError):
        return None
    starts = stamps[:, 0]
    end = float(max(stamps[-1, 1], starts[-1]))
    indices = _pick_frames(starts, end, fps, None)
    notes = []
    if (width, height) != (info.width, info.height):
        notes.append(f"frames resized from {info.width}x{info.height} to {width}x{height}")
    notes.append(f"long video: decoded {CHUNK_WINDOWS} windows at a time")
    audio, sample_rate, silent = None, None, False
    if with_audio and info.has_audio and stream_audio and audio_sample_rate:
        audio, audio_notes = SoundTrackStream.open(path, audio_sample_rate)  # silence is known once read
        sample_rate = audio_sample_rate
        notes.extend(audio_notes)
    elif with_audio and info.has_audio:
        audio, sample_rate, audio_notes = decode_audio(path, audio_sample_rate)
        notes.extend(audio_notes)
        silent = audio is not None and (audio.size == 0 or float(np.abs(audio).max()) < SILENCE_PEAK)
    return StreamedVideo(path, reader, np.asarray(indices), starts[indices], max(end - float(starts[0]), 0.0),
                         audio, sample_rate, silent, notes)


def run_video_stream(branch, stream: StreamedVideo, starts, window: float, progress: bool = False,
                     keep_images: bool = False):
    """:func:`avtag.inference.branches.run_video_windows` over the file, a chunk of windows at a time."""
    from avtag.inference.branches import VideoWindows, progress_bar, run_video_windows

    starts = list(starts)
    chunks = [list(range(i, min(i + CHUNK_WINDOWS, len(starts)))) for i in range(0, len(starts), CHUNK_WINDOWS)]
    probs, keyframes, predictions, notes, names = [], [], [], [], []
    seen: set[float] = set()
    for chunk in progress_bar(chunks, len(chunks), "video", progress, unit="chunk"):
        frames = stream.frames_between(starts[chunk[0]], starts[chunk[-1]] + window)
        part = run_video_windows(branch, frames, [starts[i] for i in chunk], window, False, keep_images)
        del frames
        names = part.event_names
        probs.append(part.probs)
        predictions.extend(part.predictions)
        for k in part.keyframes:
            if round(k.time, 6) not in seen:
                seen.add(round(k.time, 6))
                k.window += chunk[0]
                keyframes.append(k)
        notes.extend(n for n in part.notes if n not in notes)
    return VideoWindows(names, np.concatenate(probs), keyframes, predictions, notes)


AUDIO_STREAM_MIN_SECONDS = 600.0  # audio files longer than 10 min are read a window at a time


class AudioStream:
    """A long audio file read one window at a time (soundfile formats: wav, flac, ogg, ...).

    Each window is read at the file's rate, mixed to mono and resampled to the model's rate on
    its own, as :meth:`avtag.audio.tagger.AudioTagger.predict` prepares a clip; memory is one
    batch of windows whatever the file's length. ``peak`` is the largest absolute sample read.
    """

    def __init__(self, path: Path, sample_rate: int, info):
        self.path, self.sample_rate = Path(path), int(sample_rate)
        self.file_rate, self.frames = int(info.samplerate), int(info.frames)
        self.duration = self.frames / self.file_rate
        self.peak = 0.0

    def window(self, start: float, seconds: float) -> np.ndarray:
        import soundfile as sf

        from avtag.audio.io import resample
        from avtag.errors import AudioDecodeError

        begin = int(round(start * self.file_rate))
        with sf.SoundFile(str(self.path)) as handle:
            handle.seek(min(begin, self.frames))
            data = handle.read(int(round(seconds * self.file_rate)), dtype="float32", always_2d=True)
        if not np.all(np.isfinite(data)):
            raise AudioDecodeError("contains NaN or infinite samples", self.path)
        mono = data.mean(axis=1, dtype=np.float32)
        self.peak = max(self.peak, float(np.abs(mono).max(initial=0.0)))
        return resample(mono, self.file_rate, self.sample_rate)


def open_audio_stream(path: str | Path, sample_rate: int) -> AudioStream | None:
    """An :class:`AudioStream` for a long soundfile-readable file (``None``: decode it whole)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - not a soundfile format (mp3 in old libsndfile, m4a, ...): decode whole
        return None
    if info.frames <= 0 or info.samplerate <= 0 or info.frames / info.samplerate <= AUDIO_STREAM_MIN_SECONDS:
        return None
    return AudioStream(Path(path), sample_rate, info)
