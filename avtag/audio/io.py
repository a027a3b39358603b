"""Reading audio files (and the audio track of video files) into float32 arrays.

Audio files are decoded with soundfile (libsndfile: WAV, FLAC, OGG/Opus, MP3, ...);
containers that libsndfile cannot read (MP4, MKV, WebM, M4A, ...) fall back to PyAV,
which decodes the first audio stream. The audio branch never needs decord or the video
branch to read audio.

Every failure is an :class:`avtag.errors.AudioDecodeError` whose single line names the
file: missing, a broken symbolic link or a symbolic-link loop, permission denied, a
directory, empty (0 bytes), truncated/corrupt, not audio, no audio stream, or no samples at
all. A path with a newline or another unprintable character is shown repr-style
(``'a\\nb.wav'``), so the line names exactly one file. Silent audio is *not* an error: it
decodes to zeros.

Our documented choices (no paper fixes them):
- Resampling uses ``torchaudio.functional.resample`` (windowed-sinc, its defaults).
- Multi-channel audio is mixed down to mono by averaging the channels.
- Integer PCM is scaled to [-1, 1) (soundfile's ``dtype="float32"``).
- Float audio whose peak exceeds 1 (a float WAV may hold any value) is divided by its peak, so
  :func:`load_audio` always returns [-1, 1], with an :class:`AudioLevelWarning` naming the
  file and the peak: refusing would reject real float files with a little headroom above
  full scale, and the level a model sees is then the loudest level it could see.
- A truncated file raises, whatever the container: a WAV/FLAC whose header declares more
  frames than decode, and an MP4/MKV/... whose audio stream decodes more than
  :data:`TRUNCATION_SLACK_S` shorter than its header declares (e.g. 0.34 s of a 13.4 s track).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from avtag.errors import AudioDecodeError, check_input_file, display_path  # noqa: F401

TRUNCATION_SLACK_S = 0.5  # audio decoded this much shorter than its header declares: truncated


class AudioLevelWarning(UserWarning):
    """Float audio beyond full scale was normalised to [-1, 1]."""


# One set of readable-file checks for every reader (avtag.errors); re-exported for older imports.
check_readable_file = check_input_file

# Containers that libsndfile never reads; go straight to PyAV for these.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4a", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".aac", ".wmv", ".flv", ".3gp", ".ts"})


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`audio_info` reports about a file without decoding all of it."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _describe_libsndfile_error(err: Exception) -> str:
    text = str(err).split(":", 1)[-1].strip() if ":" in str(err) else str(err)
    return text or type(err).__name__


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channel count, frame count and format of an audio (or video) file."""
    path = check_readable_file(path, "an audio file", AudioDecodeError)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        try:
            info = sf.info(str(path))
            return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames), str(info.format))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            sndfile_error = _describe_libsndfile_error(err)
    else:
        sndfile_error = None
    return _pyav_info(path, sndfile_error)


def load_audio(
    path: str | Path,
    target_sr: int | None = None,
    mono: bool = True,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` to float32 in [-1, 1].

    Returns ``(samples, sample_rate)``: samples are ``(N,)`` when ``mono`` (channels
    averaged) and ``(channels, N)`` otherwise; ``sample_rate`` is ``target_sr`` when
    given (resampled) and the file's own rate otherwise. ``max_seconds`` decodes only
    the first ``max_seconds`` of the file (cheap on long recordings).
    """
    path = check_readable_file(path, "an audio file", AudioDecodeError)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        samples, sr = _pyav_decode(path, max_seconds, None)
    else:
        try:
            samples, sr = _soundfile_decode(path, max_seconds)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            samples, sr = _pyav_decode(path, max_seconds, _describe_libsndfile_error(err))
    shown = display_path(path)
    if samples.shape[1] == 0:
        raise AudioDecodeError("contains no audio samples (0 frames)", shown)
    if not np.all(np.isfinite(samples)):
        raise AudioDecodeError("contains NaN or infinite samples", shown)
    peak = float(np.abs(samples).max())
    if peak > 1.0:
        warnings.warn(f"{shown}: float audio peaks at {peak:.6g}, beyond full scale; "
                      "divided by its peak to fit [-1, 1]", AudioLevelWarning, stacklevel=2)
        samples = samples / np.float32(peak)
    if mono:
        samples = samples.mean(axis=0, dtype=np.float32)
    if target_sr is not None and int(target_sr) != sr:
        samples = resample(samples, sr, int(target_sr))
        sr = int(target_sr)
    return np.ascontiguousarray(samples, dtype=np.float32), sr


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with ``torchaudio.functional.resample``."""
    if orig_sr == target_sr:
        return samples.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    tensor = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return AF.resample(tensor, int(orig_sr), int(target_sr)).numpy()


def _soundfile_decode(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as fh:  # an open failure falls back to PyAV
        sr, declared = int(fh.samplerate), int(fh.frames)
        frames = -1 if max_seconds is None else max(0, int(round(max_seconds * sr)))
        container = str(fh.format)
        try:
            data = fh.read(frames=frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:  # the header was fine, the stream is not
            reason = _describe_libsndfile_error(err)
            raise AudioDecodeError(f"truncated or corrupt {container} stream ({reason})", display_path(path)) from None
    expected = declared if frames < 0 else min(frames, declared)
    if len(data) < expected:  # e.g. a FLAC cut short: the header promises more frames
        raise AudioDecodeError(f"truncated: header declares {declared} frames, only {len(data)} decode",
                               display_path(path))
    if container == "WAV":
        _check_wav_complete(path)
    return data.T, sr  # (channels, N)


def _check_wav_complete(path: Path) -> None:
    """libsndfile silently shortens a WAV whose data chunk runs past the end of the
    file; compare the declared data size with the bytes present instead."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # RF64/W64 and friends: trust libsndfile
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = fh.read(4), int.from_bytes(fh.read(4), "little")
            if chunk_id == b"data":
                present = size - offset - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > present:
                    raise AudioDecodeError(
                        f"truncated: data chunk declares {chunk_size} bytes, only {present} present",
                        display_path(path))
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def _pyav_info(path: Path, sndfile_error: str | None) -> AudioInfo:
    import av

    container = _pyav_open(path, sndfile_error)
    with container:
        stream = _first_audio_stream(container, path)
        sr = int(stream.sample_rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.channels or stream.codec_context.channels or 0)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = 0.0
        return AudioInfo(str(path), sr, channels, int(round(seconds * sr)), container.format.name)


def _pyav_open(path: Path, sndfile_error: str | None):
    import av

    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as err:
        reason = sndfile_error or getattr(err, "strerror", None) or type(err).__name__
        raise AudioDecodeError(f"not a decodable audio or video file ({reason})",
                               display_path(path)) from None


def _first_audio_stream(container, path: Path):
    if not container.streams.audio:
        raise AudioDecodeError("has no audio stream", display_path(path))
    return container.streams.audio[0]


def _pyav_decode(path: Path, max_seconds: float | None, sndfile_error: str | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with PyAV to float32 planar ``(channels, N)``."""
    import av

    container = _pyav_open(path, sndfile_error)
    with container:
        stream = _first_audio_stream(container, path)
        sr = int(stream.sample_rate or stream.codec_context.sample_rate or 0)
        channels = int(getattr(stream, "channels", 0) or getattr(stream.codec_context, "channels", 0) or 0)
        if sr <= 0 or channels <= 0:  # e.g. random bytes that FFmpeg probes as a stream of nothing
            raise AudioDecodeError(f"not a decodable audio file (audio stream with {channels} channels at {sr} Hz"
                                   + (f"; {sndfile_error}" if sndfile_error else "") + ")", display_path(path))
        limit = None if max_seconds is None else max(0, int(round(max_seconds * sr)))
        converter = av.AudioResampler(format="fltp", layout=stream.layout.name if stream.layout else None, rate=sr)
        declared = _declared_seconds(container, stream)
        chunks: list[np.ndarray] = []
        decoded = 0
        damage = None
        try:
            for frame in container.decode(stream):
                for converted in converter.resample(frame):
                    chunks.append(converted.to_ndarray())
                    decoded += chunks[-1].shape[1]
                if limit is not None and decoded >= limit:
                    break
            else:
                for converted in converter.resample(None):  # flush
                    chunks.append(converted.to_ndarray())
                    decoded += chunks[-1].shape[1]
        except av.error.FFmpegError as err:
            damage = type(err).__name__
            if not chunks:
                raise AudioDecodeError(f"audio stream cannot be decoded ({damage})",
                                       display_path(path)) from None
    wanted = declared if max_seconds is None or declared is None else min(declared, max_seconds)
    if wanted is not None and decoded / sr + TRUNCATION_SLACK_S < wanted:
        # as a truncated WAV or FLAC: an error, never a silently shorter clip
        raise AudioDecodeError(
            f"truncated: the audio stream declares {declared:.2f} s, only {decoded / sr:.2f} s "
            f"decode{f' ({damage})' if damage else ''}", display_path(path))
    channels = int(stream.channels or (chunks[0].shape[0] if chunks else 1))
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if limit is not None:
        samples = samples[:, :limit]
    return samples.astype(np.float32, copy=False), sr


def _declared_seconds(container, stream) -> float | None:
    """Length of the audio stream as its header declares it (None when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None
