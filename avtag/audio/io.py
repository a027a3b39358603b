"""Reading audio files (and the audio track of video files) into float32 arrays.

Audio files are decoded with soundfile (libsndfile: WAV, FLAC, OGG/Opus, MP3, ...);
containers that libsndfile cannot read (MP4, MKV, WebM, M4A, ...) fall back to PyAV,
which decodes the first audio stream. The audio branch never needs decord or the video
branch to read audio.

Every failure is an :class:`avtag.errors.AudioDecodeError` whose single line names the
file: missing, a directory, empty (0 bytes), truncated/corrupt, not audio, no audio
stream, or no samples at all. Silent audio is *not* an error: it decodes to zeros.

Choices where the paper is silent:
- Resampling uses ``torchaudio.functional.resample`` (windowed-sinc, its defaults).
- Multi-channel audio is mixed down to mono by averaging the channels.
- Integer PCM is scaled to [-1, 1) (soundfile's ``dtype="float32"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from avtag.errors import AudioDecodeError, check_input_file

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
    path = Path(path)
    check_input_file(path, "an audio file", AudioDecodeError)
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
    path = Path(path)
    check_input_file(path, "an audio file", AudioDecodeError)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        samples, sr = _pyav_decode(path, max_seconds, None)
    else:
        try:
            samples, sr = _soundfile_decode(path, max_seconds)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            samples, sr = _pyav_decode(path, max_seconds, _describe_libsndfile_error(err))
    if samples.shape[1] == 0:
        raise AudioDecodeError("contains no audio samples (0 frames)", path)
    if not np.all(np.isfinite(samples)):
        raise AudioDecodeError("contains NaN or infinite samples", path)
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
            raise AudioDecodeError(f"truncated or corrupt {container} stream ({reason})", path) from None
    expected = declared if frames < 0 else min(frames, declared)
    if len(data) < expected:  # e.g. a FLAC cut short: the header promises more frames
        raise AudioDecodeError(f"truncated: header declares {declared} frames, only {len(data)} decode", path)
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
                        f"truncated: data chunk declares {chunk_size} bytes, only {present} present", path)
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
        raise AudioDecodeError(f"not a decodable audio or video file ({reason})", path) from None


def _first_audio_stream(container, path: Path):
    if not container.streams.audio:
        raise AudioDecodeError("has no audio stream", path)
    return container.streams.audio[0]


def _pyav_decode(path: Path, max_seconds: float | None, sndfile_error: str | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with PyAV to float32 planar ``(channels, N)``."""
    import av

    container = _pyav_open(path, sndfile_error)
    with container:
        stream = _first_audio_stream(container, path)
        sr = int(stream.sample_rate or stream.codec_context.sample_rate)
        limit = None if max_seconds is None else max(0, int(round(max_seconds * sr)))
        converter = av.AudioResampler(format="fltp", layout=stream.layout.name if stream.layout else None, rate=sr)
        chunks: list[np.ndarray] = []
        decoded = 0
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
        except av.error.FFmpegError as err:
            if not chunks:
                raise AudioDecodeError(f"audio stream cannot be decoded ({type(err).__name__})", path) from None
            # A truncated tail: keep what decoded, as libsndfile does for cut-short files.
    channels = int(stream.channels or (chunks[0].shape[0] if chunks else 1))
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if limit is not None:
        samples = samples[:, :limit]
    return samples.astype(np.float32, copy=False), sr
