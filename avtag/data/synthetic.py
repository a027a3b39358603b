"""A synthetic weak-label tagging task for tests: class-specific tone bursts in noise.

Each class c owns a frequency band; a clip contains each class independently with
probability ``p_event``, as 1-2 short bursts at random onsets, over a noise floor. Only
clip-level labels are returned (the weak-label setting of 004 §2.1), so a model must
find *where* the burst is to tag the clip. Two variants:

- :func:`make_tone_task`: waveforms (tone bursts in white noise), for front-end +
  model pipelines;
- :func:`make_tone_features`: the same task directly in the log-mel domain (bursts
  raise class-specific mel bins over a frame span), for fast model-only tests.

Both are deterministic in ``seed``.
"""

from __future__ import annotations

import numpy as np


def _class_frequencies(num_classes: int, sample_rate: int) -> np.ndarray:
    """Log-spaced tone frequencies, 300 Hz to 0.4 * sample_rate."""
    return np.geomspace(300.0, 0.4 * sample_rate, num_classes)


def _draw_labels(rng: np.random.Generator, n_clips: int, num_classes: int, p_event: float) -> np.ndarray:
    return (rng.random((n_clips, num_classes)) < p_event).astype(np.float32)


def make_tone_task(
    n_clips: int,
    num_classes: int = 4,
    seconds: float = 2.0,
    sample_rate: int = 8000,
    seed: int = 0,
    p_event: float = 0.4,
    burst_seconds: tuple[float, float] = (0.15, 0.4),
    snr_db: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms ``(n_clips, samples)`` float32 and weak targets ``(n_clips, num_classes)``.

    Tone bursts (Hann-tapered sinusoids at a class-specific frequency) sit at random
    onsets in white noise; ``snr_db`` is the burst power over the noise power.
    """
    rng = np.random.default_rng(seed)
    num_samples = int(round(seconds * sample_rate))
    targets = _draw_labels(rng, n_clips, num_classes, p_event)
    frequencies = _class_frequencies(num_classes, sample_rate)
    noise_rms = 0.05
    tone_amplitude = noise_rms * np.sqrt(2.0) * 10 ** (snr_db / 20)
    waveforms = (noise_rms * rng.standard_normal((n_clips, num_samples))).astype(np.float32)
    for i, c in zip(*np.nonzero(targets)):
        for _ in range(rng.integers(1, 3)):
            length = min(num_samples, int(rng.uniform(*burst_seconds) * sample_rate))
            onset = rng.integers(0, num_samples - length + 1)
            t = np.arange(length) / sample_rate
            phase = rng.uniform(0, 2 * np.pi)
            burst = tone_amplitude * np.hanning(length) ** 0.25 * np.sin(2 * np.pi * frequencies[c] * t + phase)
            waveforms[i, onset:onset + length] += burst.astype(np.float32)
    return waveforms, targets


def make_tone_features(
    n_clips: int,
    num_classes: int = 4,
    frames: int = 400,
    n_mels: int = 60,
    seed: int = 0,
    p_event: float = 0.4,
    burst_frames: tuple[int, int] = (20, 60),
    contrast: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel-like features ``(n_clips, frames, n_mels)`` float32 and weak targets.

    The background is Gaussian noise (mean -5, std 1, like a log-mel floor); a burst of
    class c adds ``contrast`` to the mel bins of band c (bands tile the mel axis without
    overlap, leaving a margin of bins that no class uses) over ``burst_frames`` frames.
    """
    if n_mels < 2 * num_classes:
        raise ValueError("need at least two mel bins per class")
    rng = np.random.default_rng(seed)
    targets = _draw_labels(rng, n_clips, num_classes, p_event)
    features = (-5.0 + rng.standard_normal((n_clips, frames, n_mels))).astype(np.float32)
    edges = np.linspace(0, n_mels, num_classes + 1).astype(int)
    for i, c in zip(*np.nonzero(targets)):
        low, high = edges[c], max(edges[c] + 1, edges[c + 1] - 1)
        for _ in range(rng.integers(1, 3)):
            length = min(frames, int(rng.integers(burst_frames[0], burst_frames[1] + 1)))
            onset = rng.integers(0, frames - length + 1)
            features[i, onset:onset + length, low:high] += contrast
    return features, targets


__all__ = ["make_tone_features", "make_tone_task"]
