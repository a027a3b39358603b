"""Fusion weights (004 §2.3, §3.4): the weighted average, the 0.8/0.2 rule and the full search.

See :mod:`avtag.fusion` for the choices where the paper is silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from avtag.thresholds import micro_f1, tune_thresholds

RULE_HIGH_WEIGHT = 0.8  # 004 §3.4: the better branch gets 0.8, the other 0.2
DEFAULT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 10).tolist())  # our documented choice
_GAIN = 1e-12


def fuse(audio_probs: np.ndarray, video_probs: np.ndarray, audio_weights: np.ndarray | Sequence[float]) -> np.ndarray:
    """``w_c * audio_c + (1 - w_c) * video_c`` (004 §2.3) for (..., C) probability arrays."""
    audio = np.asarray(audio_probs, dtype=np.float64)
    video = np.asarray(video_probs, dtype=np.float64)
    weights = np.asarray(audio_weights, dtype=np.float64)
    if audio.shape != video.shape or audio.shape[-1] != weights.shape[-1]:
        raise ValueError(f"audio {audio.shape}, video {video.shape} and weights {weights.shape} do not match")
    if not np.all((weights >= 0) & (weights <= 1)):  # also refuses NaN
        raise ValueError("fusion weights must be finite and lie in [0, 1]")
    return weights * audio + (1.0 - weights) * video


def per_class_f1(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of each class of ``y_score >= thresholds`` (0 when a class has no TP, FP or FN)."""
    truth = np.asarray(y_true).astype(bool)
    predicted = np.asarray(y_score) >= np.asarray(thresholds)
    tp = np.sum(predicted & truth, axis=0).astype(np.float64)
    fp = np.sum(predicted & ~truth, axis=0)
    fn = np.sum(~predicted & truth, axis=0)
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


@dataclass
class RuleResult:
    """The 0.8/0.2 rule's weights and the per-class F1 that decided them."""

    audio_weights: np.ndarray
    audio_f1: np.ndarray
    video_f1: np.ndarray
    audio_thresholds: np.ndarray
    video_thresholds: np.ndarray


def rule_weights(
    audio_probs: np.ndarray, video_probs: np.ndarray, targets: np.ndarray, seed: int = 0, high: float = RULE_HIGH_WEIGHT
) -> RuleResult:
    """004 §3.4: weight ``high`` (0.8) to the branch with the better per-class F1, ``1-high`` to the other.

    Per-class F1 is measured at each branch's own §3.3 thresholds (see module docstring).
    """
    audio_tuned = tune_thresholds(targets, audio_probs, seed=seed).thresholds
    video_tuned = tune_thresholds(targets, video_probs, seed=seed).thresholds
    audio_f1 = per_class_f1(targets, audio_probs, audio_tuned)
    video_f1 = per_class_f1(targets, video_probs, video_tuned)
    weights = np.where(video_f1 > audio_f1, round(1.0 - high, 12), high)
    return RuleResult(weights, audio_f1, video_f1, audio_tuned, video_tuned)


@dataclass
class SearchResult:
    """Outcome of :func:`search_weights`."""

    audio_weights: np.ndarray
    thresholds: np.ndarray
    micro_f1: float
    start: str
    rounds: int
    history: list[float] = field(default_factory=list)


def search_weights(
    audio_probs: np.ndarray,
    video_probs: np.ndarray,
    targets: np.ndarray,
    grid: Sequence[float] = DEFAULT_GRID,
    seed: int = 0,
    max_rounds: int = 10,
    rule: RuleResult | None = None,
    fixed_thresholds: dict[int, float] | None = None,
) -> SearchResult:
    """Per-class weights maximising validation micro-F1 by seeded coordinate ascent.

    Every candidate weight vector is scored by the micro-F1 of the fused scores after the
    §3.3 threshold procedure (same ``seed``); see the module docstring for the schedule.
    ``fixed_thresholds`` (class index -> threshold, e.g. classes without positives) replace
    the tuned thresholds of those classes before a candidate is scored.
    """
    audio = np.asarray(audio_probs, dtype=np.float64)
    video = np.asarray(video_probs, dtype=np.float64)
    grid_values = np.asarray(sorted(set(float(g) for g in grid)), dtype=np.float64)
    if grid_values.size == 0 or grid_values.min() < 0 or grid_values.max() > 1:
        raise ValueError("the weight grid needs values in [0, 1]")
    num_classes = audio.shape[1]
    rule = rule or rule_weights(audio, video, targets, seed=seed)

    def score(weights: np.ndarray) -> tuple[float, np.ndarray]:
        fused = fuse(audio, video, weights)
        tuned = tune_thresholds(targets, fused, seed=seed)
        if not fixed_thresholds:
            return tuned.micro_f1, tuned.thresholds
        thresholds = tuned.thresholds.copy()
        for c, value in fixed_thresholds.items():
            thresholds[c] = value
        return micro_f1(targets, fused, thresholds), thresholds

    starts = {
        "audio": np.ones(num_classes),
        "video": np.zeros(num_classes),
        "rule": rule.audio_weights.astype(np.float64),
    }
    scored = {name: score(w) for name, w in starts.items()}
    start = max(scored, key=lambda name: scored[name][0])  # dict order breaks ties: audio first
    weights = starts[start].copy()
    best, thresholds = scored[start]
    history = [best]
    rng = np.random.default_rng(seed)
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        changed = False
        for c in rng.permutation(num_classes):
            for value in grid_values:
                if value == weights[c]:
                    continue
                candidate = weights.copy()
                candidate[c] = value
                f1, tuned = score(candidate)
                if f1 > best + _GAIN:
                    best, thresholds, weights, changed = f1, tuned, candidate, True
        history.append(best)
        if not changed:
            break
    return SearchResult(weights, thresholds, float(best), start, rounds, history)
