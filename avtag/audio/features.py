"""Log-mel front-ends: waveform (batch, samples) -> log-mel features (batch, frames, mels).

One configurable module, :class:`LogMelFrontEnd`, with one preset per paper family:

=========  ==========  =============  ==========  ======  ==========================
preset     rate        window / FFT   hop         mels    frames per 10 s
=========  ==========  =============  ==========  ======  ==========================
"crnn"     20 kHz      480 / 1024     100 (5 ms)  60      2000  (004 §3.2: 2000x60)
"mmnet"    44.1 kHz    2048 (46 ms)   492         128     896   (002 §2.7; hop: authors')
"cnn"      32 kHz      1024 / 1024    320 (10 ms) 64      1000  (PANNs-style CNN10 input)
"xu"       16 kHz      1024 Hamming   664         64      240   (Xu et al., 000's DCASE17)
"sca"      16 kHz      1024 / 1024    400 (25 ms) 64      400   (001 §4.1: 400x64 chunks)
=========  ==========  =============  ==========  ======  ==========================

Sources per preset:
- "mmnet": 128 mel bins 0-22 kHz, 46-ms (2048) window at 44.1 kHz, librosa, features
  standardised with training-set statistics (002 §2.7 "Data preprocessing"). Hop 492:
  the authors' code (fearofchou/mmnet ``main.py``, ``--hs 492``); with M&mnet's time
  stride of 16 it gives the 0.18-s segments of 002 §3 / Fig. 6 (16 x 492 / 44100 =
  0.1785 s). 002's "1/4-overlapping" window is ambiguous (a hop of 512 gives 0.186 s).
- "xu": the front-end of Xu et al.'s DCASE 2017 system, the gated CNN that 000 §3.4
  uses on DCASE17 (authors' code, yongxuUSTC/dcase2017_task4_cvssp ``config.py`` and
  ``prepare_data.py``): 16 kHz, 1024-sample Hamming window, hop 664 ("240 frames in
  10 seconds"), magnitude (power 1) spectrogram, 64 Slaney mel bins 0-8 kHz,
  ``log(x + 1e-8)``, standardised per mel bin with training-set statistics (their
  ``calculate_scaler``; here ``feature_statistics_clips`` in the config). Our
  documented difference: frames are centred (scipy's are not), which shifts every
  frame by half a window (32 ms) and keeps ``T = floor(samples / hop)`` = 240.
- "sca": 001 §4.1 "each chunk has 400 frames and 64 frequency bins" for a 10-s
  AudioSet clip, i.e. 40 frames/s. The 16-kHz rate, 1024-sample window and 0-8 kHz mel
  range are our documented choice (001 defers to its ref. [13] for the rest).

Frame count: ``T = floor(samples / hop)`` exactly. Frames are centred (frame ``t``
covers the window centred on sample ``t * hop``, reflect-padded at the edges like
librosa's default); ``torch.stft`` with ``center=True`` returns ``1 + samples // hop``
frames and the last one, centred past the end of the clip, is dropped. Hence 10 s at
20 kHz with hop 100 gives 2000 frames, as 004 §3.2 states.

Choices where the paper is silent:
- Power (|X|^2) mel spectrogram, natural log with an additive offset of 1e-6 (keeps
  digital silence finite: log(1e-6) = -13.8) rather than dB with a top_db clip.
- Hann window (Hamming for "xu", as Xu's code); a window shorter than the FFT (crnn: 480 in 1024) is zero-padded on
  both sides by torch.stft.
- Mel filters: "crnn" HTK scale without area normalisation, 0 Hz to Nyquist (the
  Keras-era default of 004's toolkit is not stated); "mmnet" librosa-like Slaney scale
  and Slaney area normalisation, 0 to 22.05 kHz (002 used librosa); "cnn" Slaney,
  50 Hz to 14 kHz (the PANNs CNN10 setting).
- Centre padding as described above (drop the last frame) so that 10 s -> 2000 frames.
- ``prepare`` crops clips longer than the clip length from the START (the first
  ``clip_seconds`` seconds are kept; DCASE17 clips are 10 s, so only stray longer files
  are affected) and zero-pads shorter ones at the END.
- Mono mixdown by averaging channels; an array (a, b) is read as (channels, samples)
  when a <= 8 < b and as (samples, channels) when b <= 8 < a.
- Features are always computed in float32 (autocast disabled inside ``forward``): the
  STFT in float16 loses the quiet bins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF
from torch import Tensor, nn

MAX_CHANNELS = 8

PRESETS: dict[str, dict[str, Any]] = {
    "crnn": dict(sample_rate=20000, n_fft=1024, win_length=480, hop_length=100, n_mels=60,
                 f_min=0.0, f_max=None, mel_scale="htk", norm=None),
    "mmnet": dict(sample_rate=44100, n_fft=2048, win_length=2048, hop_length=492, n_mels=128,
                  f_min=0.0, f_max=None, mel_scale="slaney", norm="slaney"),
    "cnn": dict(sample_rate=32000, n_fft=1024, win_length=1024, hop_length=320, n_mels=64,
                f_min=50.0, f_max=14000.0, mel_scale="slaney", norm="slaney"),
    "xu": dict(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=664, n_mels=64,
               f_min=0.0, f_max=8000.0, mel_scale="slaney", norm="slaney", power=1.0, log_offset=1e-8,
               window="hamming"),
    "sca": dict(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=400, n_mels=64,
                f_min=0.0, f_max=8000.0, mel_scale="slaney", norm="slaney"),
}
WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window}


class LogMelFrontEnd(nn.Module):
    """Waveform -> log-mel features ``(batch, frames, n_mels)`` on the module's device.

    All constructor arguments are JSON values and :attr:`config` returns them, so
    ``LogMelFrontEnd(**frontend.config)`` rebuilds the same front-end (the
    standardisation statistics are in the state dict).
    """

    def __init__(
        self,
        sample_rate: int = 20000,
        n_fft: int = 1024,
        win_length: int = 480,
        hop_length: int = 100,
        n_mels: int = 60,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "htk",
        norm: str | None = None,
        power: float = 2.0,
        log_offset: float = 1e-6,
        clip_seconds: float | None = 10.0,
        standardize: bool = False,
        window: str = "hann",
    ) -> None:
        super().__init__()
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
        if clip_seconds is not None and clip_seconds <= 0:
            raise ValueError("clip_seconds must be positive (or None for no fixed length)")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.win_length = int(win_length)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = None if f_max is None else float(f_max)
        self.mel_scale = mel_scale
        self.norm = norm
        self.power = float(power)
        self.log_offset = float(log_offset)
        self.clip_seconds = None if clip_seconds is None else float(clip_seconds)
        self.standardize = bool(standardize)
        self.window = window
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            f_min=self.f_min,
            f_max=self.f_max,
            n_mels=self.n_mels,
            window_fn=WINDOWS[window],
            power=self.power,
            center=True,
            pad_mode="reflect",
            norm=self.norm,
            mel_scale=self.mel_scale,
        )
        # Training-set statistics per mel bin (002 §2.7); identity until fit_statistics.
        self.register_buffer("feature_mean", torch.zeros(self.n_mels))
        self.register_buffer("feature_std", torch.ones(self.n_mels))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LogMelFrontEnd:
        """A front-end of one of :data:`PRESETS` ("crnn", "mmnet", "cnn", "xu", "sca")."""
        if name not in PRESETS:
            raise ValueError(f"unknown front-end preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**(PRESETS[name] | overrides))

    @property
    def config(self) -> dict[str, Any]:
        """JSON dict of constructor arguments that rebuilds this front-end."""
        return {
            "sample_rate": self.sample_rate, "n_fft": self.n_fft, "win_length": self.win_length,
            "hop_length": self.hop_length, "n_mels": self.n_mels, "f_min": self.f_min, "f_max": self.f_max,
            "mel_scale": self.mel_scale, "norm": self.norm, "power": self.power,
            "log_offset": self.log_offset, "clip_seconds": self.clip_seconds, "standardize": self.standardize,
            "window": self.window,
        }

    # ------------------------------------------------------------------ geometry

    @property
    def hop_seconds(self) -> float:
        """Seconds between consecutive feature frames."""
        return self.hop_length / self.sample_rate

    @property
    def clip_samples(self) -> int | None:
        """Samples of one clip at :attr:`sample_rate` (None: variable-length clips)."""
        return None if self.clip_seconds is None else int(round(self.clip_seconds * self.sample_rate))

    @property
    def clip_frames(self) -> int | None:
        """Feature frames of one clip (``clip_samples // hop_length``)."""
        return None if self.clip_samples is None else self.num_frames(self.clip_samples)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: ``floor(num_samples / hop)``."""
        return int(num_samples) // self.hop_length

    # ------------------------------------------------------------------ compute

    def forward(self, waveform: Tensor) -> Tensor:
        """``waveform`` (batch, samples) or (samples,) at :attr:`sample_rate` ->
        ``(batch, frames, n_mels)`` float32 on this module's device. int16 batches (as
        packed, :mod:`avtag.data.pack`) travel as int16 and become ``x / 32767`` here, on
        the device: half the bytes through the loader and no float temporaries on the CPU."""
        if waveform.dtype == torch.int16:
            waveform = waveform.to(self.feature_mean.device, non_blocking=True).float().div_(32767.0)
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
        device = self.feature_mean.device
        waveform = waveform.to(device=device, dtype=torch.float32)
        num_samples = waveform.shape[-1]
        frames = self.num_frames(num_samples)
        minimum = self.n_fft // 2 + 1  # reflect padding needs more samples than half a window
        if num_samples < minimum:
            waveform = nn.functional.pad(waveform, (0, minimum - num_samples))
        with torch.autocast(device_type=device.type, enabled=False):
            mel = self.melspec(waveform)[..., :frames]  # (batch, n_mels, frames)
            features = torch.log(mel + self.log_offset).transpose(1, 2)
            if self.standardize:
                features = (features - self.feature_mean) / self.feature_std
        return features.contiguous()

    def prepare(self, waveform: np.ndarray | Tensor, sample_rate: int) -> Tensor:
        """Any layout ``(N,)``, ``(C, N)`` or ``(N, C)`` at any rate -> mono float32
        ``(clip_samples,)`` at :attr:`sample_rate` (zero-padded at the end or cropped
        from the start), on the CPU."""
        tensor = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, Tensor) else waveform)
        tensor = tensor.detach().to("cpu", torch.float32)
        tensor = mixdown(tensor)
        if int(sample_rate) != self.sample_rate:
            tensor = AF.resample(tensor, int(sample_rate), self.sample_rate)
        if self.clip_samples is not None:
            tensor = fit_length(tensor, self.clip_samples)
        return tensor.contiguous()


def mixdown(waveform: Tensor) -> Tensor:
    """Average channels of a ``(N,)``, ``(C, N)`` or ``(N, C)`` signal to ``(N,)``."""
    if waveform.dim() == 1:
        return waveform
    if waveform.dim() != 2:
        raise ValueError(f"expected (samples,), (channels, samples) or (samples, channels), got {tuple(waveform.shape)}")
    rows, cols = waveform.shape
    if rows <= MAX_CHANNELS and (cols > MAX_CHANNELS or rows <= cols):
        return waveform.mean(dim=0)
    if cols <= MAX_CHANNELS:
        return waveform.mean(dim=1)
    raise ValueError(f"cannot tell channels from samples in a waveform of shape {tuple(waveform.shape)}")


def fit_length(waveform: Tensor, num_samples: int) -> Tensor:
    """Crop from the start / zero-pad at the end along the last axis to ``num_samples``."""
    length = waveform.shape[-1]
    if length >= num_samples:
        return waveform[..., :num_samples]
    return nn.functional.pad(waveform, (0, num_samples - length))


@torch.no_grad()
def fit_statistics(
    frontend: LogMelFrontEnd,
    waveforms: Iterable[np.ndarray | Tensor],
    sample_rate: int | None = None,
    min_std: float = 1e-3,
) -> LogMelFrontEnd:
    """Fill ``frontend``'s per-mel-bin mean/std from training waveforms and switch
    standardisation on (002 §2.7). Returns the same front-end.

    ``waveforms`` yields clips ``(samples,)`` or batches ``(batch, samples)`` already at
    ``frontend.sample_rate`` (or at ``sample_rate``, when given, passed through
    :meth:`LogMelFrontEnd.prepare` one clip at a time). Statistics are pooled over every
    frame of every clip (float64 sums); the std is floored at ``min_std``.
    """
    was_standardizing = frontend.standardize
    frontend.standardize = False
    device = frontend.feature_mean.device
    total = torch.zeros(frontend.n_mels, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    count = 0
    try:
        for item in waveforms:
            wave = torch.as_tensor(np.asarray(item) if not isinstance(item, Tensor) else item)
            if sample_rate is not None:
                wave = frontend.prepare(wave, sample_rate)
            features = frontend(wave).double().reshape(-1, frontend.n_mels)
            total += features.sum(dim=0)
            total_sq += features.square().sum(dim=0)
            count += features.shape[0]
    except BaseException:
        frontend.standardize = was_standardizing
        raise
    if count == 0:
        frontend.standardize = was_standardizing
        raise ValueError("fit_statistics needs at least one waveform with at least one frame")
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    frontend.feature_mean.copy_(mean.float())
    frontend.feature_std.copy_(var.sqrt().clamp_min(min_std).float())
    frontend.standardize = True
    return frontend


def expected_frames(seconds: float, preset: str = "crnn") -> int:
    """Frames a preset produces for ``seconds`` of audio (handy for shape checks)."""
    params = PRESETS[preset]
    return int(round(seconds * params["sample_rate"])) // params["hop_length"]


__all__ = ["PRESETS", "WINDOWS", "LogMelFrontEnd", "expected_frames", "fit_length", "fit_statistics", "mixdown"]
