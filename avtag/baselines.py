"""What a system that never listens to the audio scores: the label-prior and all-positive
baselines printed next to every evaluation (``avtag evaluate``, ``avtag train test``, batch
evaluation). Also importable as ``avtag.metrics.baseline_scores``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BaselineScores:
    """What a system that never listens to the audio scores on the same clips.

    * ``prior_*``: the label-prior baseline. For ranking, every clip is scored by its class's
      positive rate (a constant per class: AP = the positive rate, AUC = 0.5); for decisions,
      every clip gets the same set, the ``prior_classes`` most frequent classes, with the
      number of classes chosen for the best micro-F1.
    * ``all_positive_*``: every class predicted present for every clip (recall 1).

    Both use the evaluated set's own label frequencies (an oracle prior, our documented
    choice: a model's scores are only informative if they beat it).
    """

    prior_micro_f1: float
    prior_classes: int
    prior_map: float
    prior_mauc: float
    all_positive_micro_f1: float
    all_positive_macro_f1: float
    absent_classes: list[str]

    def as_dict(self) -> dict[str, float | int | list[str]]:
        return {
            "label_prior": {"micro_f1": self.prior_micro_f1, "classes_predicted": self.prior_classes,
                            "mAP": self.prior_map, "mAUC": self.prior_mauc},
            "all_positive": {"micro_f1": self.all_positive_micro_f1, "macro_f1": self.all_positive_macro_f1},
        }

    def summary(self) -> str:
        """One line for a CLI, printed next to a system's scores."""
        return (
            f"baselines: label prior micro-F1 {self.prior_micro_f1:.4f} (the {self.prior_classes} most frequent "
            f"class(es) for every clip), mAP {self.prior_map:.4f}, mAUC {self.prior_mauc:.2f}; "
            f"all classes positive micro-F1 {self.all_positive_micro_f1:.4f}"
        )


def _f1_of_counts(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def baseline_scores(y_true: np.ndarray, classes: Sequence[str] | None = None) -> BaselineScores:
    """Label-prior and all-positive baselines of binary targets ``(N, C)`` (see :class:`BaselineScores`)."""
    y_true = np.asarray(y_true).astype(bool)
    if y_true.ndim != 2:
        raise ValueError(f"targets must be (N, C), got {y_true.shape}")
    names = list(classes) if classes is not None else [str(c) for c in range(y_true.shape[1])]
    clips = len(y_true)
    counts = y_true.sum(axis=0).astype(np.float64)
    total = float(counts.sum())
    best_f1, best_k, tp = 0.0, 0, 0.0
    for k, c in enumerate(np.argsort(-counts, kind="stable"), start=1):  # add classes by frequency
        tp += counts[c]
        f1 = _f1_of_counts(tp, k * clips - tp, total - tp)
        if f1 > best_f1 + 1e-12:
            best_f1, best_k = f1, k
    scored = (counts > 0) & (counts < clips)
    rates = counts / max(clips, 1)
    per_class_all = [_f1_of_counts(n, clips - n, 0.0) for n in counts]
    return BaselineScores(
        prior_micro_f1=float(best_f1),
        prior_classes=best_k,
        prior_map=float(rates[scored].mean()) if scored.any() else math.nan,
        prior_mauc=0.5 if scored.any() else math.nan,
        all_positive_micro_f1=float(_f1_of_counts(total, clips * len(counts) - total, 0.0)),
        all_positive_macro_f1=float(np.mean(per_class_all)) if per_class_all else 0.0,
        absent_classes=[names[c] for c in np.flatnonzero(counts == 0)],
    )


__all__ = ["BaselineScores", "baseline_scores"]
