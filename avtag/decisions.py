"""How a :class:`avtag.tagging_module.TaggingModule` turns clip probabilities into decisions,
and the scores it logs every epoch.

``decision_thresholds``: ``"tuned"`` (004 §3.3, class-specific thresholds tuned on each
validation epoch), a number (one global threshold for every class; 000 scores DCASE 2017
with 0.3) or ``"none"`` (no tuning; AudioSet is scored by ranking metrics, 000 §4).
"""

from __future__ import annotations

import numpy as np

from avtag.errors import AvtagError

THRESHOLD_MODES = ("tuned", "none")
UNTUNED_THRESHOLD = 0.5  # decisions of decision_thresholds="none": our documented choice


def parse_decision_thresholds(value: str | float) -> str | float:
    """``"tuned"``, ``"none"`` or a float in (0, 1) (a numeric string is read as a number)."""
    if isinstance(value, str) and value not in THRESHOLD_MODES:
        try:
            value = float(value)
        except ValueError:
            raise AvtagError(f"decision_thresholds must be 'tuned', 'none' or a number in (0, 1), got {value!r}") from None
    if isinstance(value, bool) or (not isinstance(value, str) and not (isinstance(value, (int, float)) and 0.0 < value < 1.0)):
        raise AvtagError(f"decision_thresholds must be 'tuned', 'none' or a number in (0, 1), got {value!r}")
    return value if isinstance(value, str) else float(value)


def fixed_thresholds(mode: str | float, count: int) -> list[float] | None:
    """The ``count`` thresholds of a mode that tunes nothing, or None for ``"tuned"``."""
    if mode == "tuned":
        return None
    return [UNTUNED_THRESHOLD if mode == "none" else float(mode)] * count


def threshold_source(mode: str | float) -> str:
    """Where a mode's thresholds come from, in words (written with every export and evaluation)."""
    if mode == "tuned":
        return "tuned on the validation set during training (004 section 3.3)"
    if mode == "none":
        return f"not tuned (decision_thresholds: none): {UNTUNED_THRESHOLD} for every class"
    return f"one global threshold {float(mode)} for every class (decision_thresholds)"


def epoch_scores(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, prefix: str) -> dict[str, float]:
    """Micro P/R/F1 at ``thresholds`` and the ranking scores (mAP, mean AUC, d-prime)."""
    from avtag.metrics import ranking_scores

    decisions = probs >= thresholds
    true_positives = int(np.sum(decisions & targets))
    predicted, positives = int(decisions.sum()), int(targets.sum())
    ranking = ranking_scores(targets, probs)
    return {
        f"{prefix}_micro_f1": 2 * true_positives / max(predicted + positives, 1),
        f"{prefix}_micro_precision": true_positives / max(predicted, 1),
        f"{prefix}_micro_recall": true_positives / max(positives, 1),
        f"{prefix}_map": _finite_or_zero(ranking.mean_average_precision),
        f"{prefix}_mauc": _finite_or_zero(ranking.mean_auc),
        f"{prefix}_dprime": _finite_or_zero(ranking.mean_d_prime),
    }


def _finite_or_zero(value: float) -> float:
    """Ranking scores are undefined (NaN) when no class has both positives and negatives: log 0."""
    return float(value) if np.isfinite(value) else 0.0


__all__ = [
    "THRESHOLD_MODES",
    "UNTUNED_THRESHOLD",
    "epoch_scores",
    "fixed_thresholds",
    "parse_decision_thresholds",
    "threshold_source",
]
