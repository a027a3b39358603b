"""Ranking scores of clip probabilities: per-class and macro AP, AUC and d-prime
(000 §4.1 and the AudioSet papers score AudioSet this way).

Choices where the paper is silent:

* Macro d-prime is ``sqrt(2) * norm.ppf(mean AUC)`` (the AudioSet convention), not the mean of
  per-class d-primes; classes without positives or without negatives get NaN AP/AUC, are
  skipped in the means and listed in ``skipped``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def d_prime(auc: float | np.ndarray) -> float | np.ndarray:
    """Sensitivity index ``sqrt(2) * Phi^-1(AUC)``."""
    from scipy.stats import norm

    return math.sqrt(2.0) * norm.ppf(auc)


@dataclass
class RankingScores:
    """Per-class and macro mAP / AUC / d-prime; NaN for classes that could not be scored."""

    average_precision: dict[str, float]
    auc: dict[str, float]
    d_prime: dict[str, float]
    mean_average_precision: float
    mean_auc: float
    mean_d_prime: float
    skipped: list[str]


def ranking_scores(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str] | None = None) -> RankingScores:
    """mAP, mean AUC and d-prime of clip scores ``(N, C)`` against binary targets ``(N, C)``.

    Uses scikit-learn's ``average_precision_score`` and ``roc_auc_score`` per class. A class
    with no positive or no negative clip has undefined AP/AUC: NaN, left out of the means and
    listed in ``skipped``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be the same (N, C) shape")
    names = list(classes) if classes is not None else [str(c) for c in range(y_true.shape[1])]
    if len(names) != y_true.shape[1]:
        raise ValueError(f"{len(names)} class names for {y_true.shape[1]} columns")
    ap, auc, skipped = {}, {}, []
    for c, name in enumerate(names):
        positives = int(y_true[:, c].sum())
        if positives == 0 or positives == len(y_true):
            ap[name] = auc[name] = math.nan
            skipped.append(name)
            continue
        ap[name] = float(average_precision_score(y_true[:, c], y_score[:, c]))
        auc[name] = float(roc_auc_score(y_true[:, c], y_score[:, c]))
    scored = [n for n in names if n not in skipped]
    mean_ap = float(np.mean([ap[n] for n in scored])) if scored else math.nan
    mean_auc = float(np.mean([auc[n] for n in scored])) if scored else math.nan
    return RankingScores(
        average_precision=ap,
        auc=auc,
        d_prime={n: float(d_prime(auc[n])) if n in scored else math.nan for n in names},
        mean_average_precision=mean_ap,
        mean_auc=mean_auc,
        mean_d_prime=float(d_prime(mean_auc)) if scored else math.nan,
        skipped=skipped,
    )


__all__ = ["RankingScores", "d_prime", "ranking_scores"]
