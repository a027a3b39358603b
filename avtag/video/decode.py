"""Video decoding for the visual branch: RGB frames with real timestamps, plus the audio track.

Frames come from decord (resized on decode, so a 4K clip never materialises at full size);
the container is probed with PyAV first, which is cheap and tells us which streams exist, so
every outcome is explicit:

* no video stream (an audio-only file)  -> :class:`~avtag.errors.VideoDecodeError` whose
  message says "no video stream"; callers that want to fall back to the audio branch check
  ``probe(path).has_video`` first;
* no audio stream, or a silent one      -> frames as usual, ``audio`` is ``None`` or zeros,
  ``has_audio_stream`` / ``audio_is_silent`` and ``notes`` say which;
* a missing, empty, truncated or non-media file -> a one-line ``InputFileError`` /
  ``VideoDecodeError`` naming the file; a file truncated after some frames decodes what is
  there and says so in ``notes``;
* a video stream without decodable frames -> ``VideoDecodeError``;
* variable frame rate -> frames are chosen and reported with their real presentation times;
* grayscale or any other pixel format  -> always (N, H, W, 3) uint8 RGB.

Choices where the paper is silent:
  - 004 (§3.4) uses all 240 frames of a 10 s clip (24 fps); the default here is likewise all
    frames (``fps=None, num_frames=None``).  Sampling at ``fps`` takes, for each instant
    ``t0 + k/fps``, the frame on screen at that instant; ``num_frames`` takes the frames on
    screen at the centres of ``num_frames`` equal time segments.  A frame picked twice (rate
    above the native one, or long gaps in a variable-rate stream) is kept once.
  - Frames are resized on decode so that the longer side is at most ``max_side`` (640 by
    default, enough for 224-pixel recognition crops), keeping the stored aspect ratio.
  - Audio is decoded with PyAV (it reports the native rate of every codec, Opus included),
    mixed down to mono float32 in [-1, 1] (a track beyond full scale is divided by its peak,
    as :func:`avtag.audio.io.load_audio` does); it is "silent" when its peak is below 1e-4
    (-80 dBFS).  A broken or truncated audio track never fails the video: it is reported in
    ``notes`` (``load_audio`` raises for the same file).
  - File errors say what is wrong (permission denied, symbolic-link loop, ...) and show a path
    holding a newline repr-style (:func:`avtag.audio.io.check_readable_file`).
  - A stream is called variable-rate when the spread (5th to 95th percentile) of its frame
    intervals exceeds 10 % of the median interval.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from avtag.audio.io import check_readable_file, display_path
from avtag.errors import VideoDecodeError

SILENCE_PEAK = 1e-4  # -80 dBFS: a track whose peak stays below this is reported as silent
VFR_SPREAD = 0.10  # relative spread of frame intervals above which the stream is variable-rate
TRUNCATION_SLACK_S = 0.5  # decoded video shorter than declared by more than this -> "truncated"


@dataclass(frozen=True)
class VideoProbe:
    """What a container holds, read from its header without decoding frames."""

    path: str
    has_video: bool
    has_audio: bool
    duration: float | None  # seconds, from the container (None when unknown)
    video_duration: float | None  # seconds, of the video stream as its header declares it
    fps: float | None  # native average frame rate of the first video stream
    width: int | None
    height: int | None
    num_frames: int | None  # as declared by the container (None when it does not say)
    video_codec: str | None
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None


@dataclass
class DecodedVideo:
    """Decoded frames (uint8 RGB, (N, H, W, 3)) with their times, and the mono audio track."""

    path: str
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    times: np.ndarray  # (N,) float64 presentation times in seconds
    frame_indices: np.ndarray  # (N,) int64 index of each frame in the full stream
    fps: float  # native average frame rate
    duration: float  # seconds of decodable video
    audio: np.ndarray | None  # (S,) float32 mono in [-1, 1], None without an audio track
    sample_rate: int | None
    has_audio_stream: bool
    audio_is_silent: bool  # True only when a track was decoded and its peak is below -80 dBFS
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the decoded frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def _clean(err: BaseException) -> str:
    """A short reason from a PyAV/decord exception, without log prefixes or source paths."""
    text = getattr(err, "strerror", None) or str(err)
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)  # decord "[time] file.cc:N: "
    text = re.sub(r"Check failed: .*?\(-?\d+ vs\. -?\d+\)\s*", "", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _decode_frames_sequentially(
    path: Path, width: int, height: int
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Every frame PyAV can decode before the first error, with start times and end time."""
    import av

    frames: list[np.ndarray] = []
    starts: list[float] = []
    last_duration = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    continue
                starts.append(float(frame.pts * frame.time_base))
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                if frame.duration and frame.time_base:
                    last_duration = float(frame.duration * frame.time_base)
    except (av.error.FFmpegError, OSError, ValueError):
        pass  # keep what decoded before the damage
    if not starts:
        return [], np.zeros(0), 0.0
    order = np.argsort(starts, kind="stable")
    start_times = np.asarray(starts, dtype=np.float64)[order]
    ordered = [frames[i] for i in order]
    if last_duration <= 0 and len(start_times) > 1:
        last_duration = float(np.median(np.diff(start_times)))
    return ordered, start_times, float(start_times[-1] + last_duration)


def probe(path: str | Path) -> VideoProbe:
    """Read stream information from the container header (fast: decodes nothing).

    Raises :class:`InputFileError` for a missing/empty file and :class:`VideoDecodeError` for
    a file that is not a readable media container (truncated header, wrong format).
    """
    import av

    path = check_readable_file(path, "a video file", VideoDecodeError)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"not a readable media file ({_clean(err)})",
                               display_path(path)) from None
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = container.duration / 1_000_000 if container.duration else None
        video_duration = None
        if video is not None and video.duration and video.time_base:
            video_duration = float(video.duration * Fraction(video.time_base))
        rate = None
        if video is not None:
            rate_q = video.average_rate or video.guessed_rate or video.base_rate
            rate = float(rate_q) if rate_q else None
        return VideoProbe(
            path=str(path),
            has_video=video is not None,
            has_audio=audio is not None,
            duration=duration,
            video_duration=video_duration or duration,
            fps=rate,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            num_frames=(video.frames or None) if video is not None else None,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
        )


def resized_shape(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most ``max_side``, aspect kept."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pick_frames(
    starts: np.ndarray, end: float, fps: float | None, num_frames: int | None
) -> np.ndarray:
    """Indices of the frames on screen at the requested instants (all frames by default)."""
    n = len(starts)
    if fps is None and num_frames is None:
        return np.arange(n)
    t0 = float(starts[0])
    span = max(end - t0, 1e-9)
    if fps is not None:
        instants = t0 + np.arange(max(1, math.ceil(span * fps - 1e-9))) / fps
    else:
        if num_frames >= n:
            return np.arange(n)
        instants = t0 + (np.arange(num_frames) + 0.5) * span / num_frames
    on_screen = np.searchsorted(starts, instants, side="right") - 1
    return np.unique(np.clip(on_screen, 0, n - 1))


def _is_variable_rate(starts: np.ndarray) -> bool:
    intervals = np.diff(starts)
    if len(intervals) >= 3:
        intervals = intervals[:-1]  # the last interval is often odd (container end padding)
    if len(intervals) < 2:
        return False
    median = float(np.median(intervals))
    if median <= 0:
        return True
    spread = float(np.percentile(intervals, 95) - np.percentile(intervals, 5))
    return spread > VFR_SPREAD * median


def decode_audio(
    path: str | Path, sample_rate: int | None = None
) -> tuple[np.ndarray | None, int | None, list[str]]:
    """Mono float32 audio of the first audio stream, its rate, and remarks.

    Returns ``(None, None, notes)`` when there is no audio stream or it cannot be decoded
    (the reason is in ``notes``); a track cut short by a truncated file returns what decoded.
    """
    import av

    path = Path(path)
    notes: list[str] = []
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        return None, None, [f"audio track could not be read ({_clean(err)})"]
    with container:
        if not container.streams.audio:
            return None, None, ["no audio stream"]
        stream = container.streams.audio[0]
        rate = int(sample_rate or stream.codec_context.sample_rate or 0)
        if rate <= 0:
            return None, None, ["audio stream has no sample rate"]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as err:
            notes.append(f"audio track is damaged, decoded {sum(map(len, chunks)) / rate:.2f} s "
                         f"({_clean(err)})")
        try:
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError):
            pass
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
    if not chunks:
        notes.append("audio stream holds no decodable samples")
        return None, None, notes
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if declared is not None and len(audio) / rate + TRUNCATION_SLACK_S < declared:
        notes.append(f"audio track looks truncated: decoded {len(audio) / rate:.2f} s of the "
                     f"{declared:.2f} s its header declares")
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:  # as avtag.audio.io.load_audio: always [-1, 1]
        notes.append(f"audio peaks at {peak:.3g}, beyond full scale: divided by its peak")
        audio = audio / np.float32(peak)
    return audio, rate, notes


def decode_video(
    path: str | Path,
    fps: float | None = None,
    num_frames: int | None = None,
    max_side: int | None = 640,
    with_audio: bool = True,
    audio_sample_rate: int | None = None,
) -> DecodedVideo:
    """Decode the frames (all, sampled at ``fps``, or ``num_frames`` evenly spread) and audio.

    Frames are RGB uint8 (N, H, W, 3), resized on decode so that the longer side is at most
    ``max_side`` (``None`` keeps the native size); ``times`` are real presentation times, so a
    variable-rate stream is handled. Raises :class:`VideoDecodeError` (one line naming the
    file) for audio-only files ("no video stream"), unreadable files and streams without
    decodable frames.
    """
    if fps is not None and num_frames is not None:
        raise ValueError("give either fps or num_frames, not both")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")

    import decord

    decord.logging.set_level(decord.logging.QUIET)
    path = Path(path)
    info = probe(path)
    if not info.has_video:
        kind = "audio-only file" if info.has_audio else "no audio either"
        raise VideoDecodeError(f"no video stream ({kind})", display_path(path))
    if not info.width or not info.height:
        raise VideoDecodeError("video stream has no frame size (no decodable frames)", display_path(path))

    width, height = resized_shape(info.width, info.height, max_side)
    notes: list[str] = []
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height)
        if len(reader) == 0:
            raise VideoDecodeError("video stream holds zero frames", display_path(path))
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))), dtype=np.float64)
        starts = stamps[:, 0]
        end = float(max(stamps[-1, 1], starts[-1]))
        indices = _pick_frames(starts, end, fps, num_frames)
        frames = reader.get_batch(indices.tolist()).asnumpy()
        native_fps = float(reader.get_avg_fps() or info.fps or 0.0)
        del reader
    except VideoDecodeError:
        raise
    except (decord.DECORDError, RuntimeError, ValueError, IndexError) as err:
        # decord trusts the container index; a file cut short after a complete index (mp4
        # with the index first) fails there, so decode sequentially what is really present.
        all_frames, starts, end = _decode_frames_sequentially(path, width, height)
        if len(all_frames) == 0:
            raise VideoDecodeError(
                f"video stream holds no decodable frames ({_clean(err)})", display_path(path)
            ) from None
        indices = _pick_frames(starts, end, fps, num_frames)
        frames = np.stack([all_frames[i] for i in indices])
        native_fps = float(info.fps or (len(starts) / max(end - starts[0], 1e-9)))
        notes.append(f"decord could not read the stream ({_clean(err)}); "
                     f"decoded {len(starts)} frames sequentially with PyAV")

    if frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoDecodeError("video stream holds zero decodable frames", display_path(path))
    if frames.shape[-1] == 1:  # defensive: decord converts to rgb24, but keep the contract
        frames = np.repeat(frames, 3, axis=-1)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)

    duration = max(end - float(starts[0]), 0.0)
    if (width, height) != (info.width, info.height):
        notes.append(f"frames resized from {info.width}x{info.height} to {width}x{height}")
    if _is_variable_rate(starts):
        notes.append("variable frame rate: frames carry their real timestamps")
    if info.video_duration is not None and duration + TRUNCATION_SLACK_S < info.video_duration:
        notes.append(f"file looks truncated: decoded {duration:.2f} s of video, "
                     f"header says {info.video_duration:.2f} s")
    if fps is not None and native_fps and fps > native_fps:
        notes.append(f"requested {fps:g} fps exceeds the native {native_fps:.3g} fps; "
                     "each frame is returned once")

    audio, sample_rate, audio_is_silent = None, None, False
    if with_audio and info.has_audio:
        audio, sample_rate, audio_notes = decode_audio(path, audio_sample_rate)
        notes.extend(audio_notes)
        if audio is not None and (audio.size == 0 or float(np.abs(audio).max()) < SILENCE_PEAK):
            audio_is_silent = True
            notes.append("audio track is silent")
    elif not info.has_audio:
        notes.append("no audio stream")

    return DecodedVideo(
        path=str(path),
        frames=frames,
        times=starts[indices],
        frame_indices=indices.astype(np.int64),
        fps=native_fps,
        duration=duration,
        audio=audio,
        sample_rate=sample_rate,
        has_audio_stream=info.has_audio,
        audio_is_silent=audio_is_silent,
        notes=notes,
    )

