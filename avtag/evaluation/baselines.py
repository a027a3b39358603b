"""Reference scores that any tagger must beat, printed next to every evaluation (issue 9 item 6).

Both are computed from the evaluated clips' own labels (our documented choice: an oracle
*constant* prediction, so beating it says the model uses the clip's content):

* ``all_positive``: every class predicted on every clip (recall 1).
* ``label_prior``: the same label set on every clip, the most frequent classes of the
  evaluated labels, as many of them as maximise micro-F1 (the best constant prediction that
  follows the label prior; it is at least as good as ``all_positive``). Its mAP is that of
  scoring every clip with the class prior: the mean over classes with positives of the
  class's positive rate (the AP of a constant score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _prf(tp: float, fp: float, fn: float) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def tagging_baselines(targets: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """``all_positive`` and ``label_prior`` micro P/R/F1 (and the prior's mAP) for (N, C) targets."""
    truth = np.asarray(targets, dtype=bool)
    n, c = truth.shape
    positives = truth.sum(axis=0)
    total = int(positives.sum())
    all_positive = _prf(total, n * c - total, 0)
    order = np.argsort(-positives, kind="stable")
    best_k, best = 1, None
    for k in range(1, c + 1):
        tp = int(positives[order[:k]].sum())
        scores = _prf(tp, n * k - tp, total - tp)
        if best is None or scores["f1"] > best["f1"] + 1e-12:
            best_k, best = k, scores
    present = positives > 0
    prior_map = float(np.mean(positives[present] / n)) if present.any() and n else None
    label_prior = {**(best or _prf(0, 0, total)), "classes": [classes[i] for i in order[:best_k]], "mAP": prior_map}
    return {"all_positive": all_positive, "label_prior": label_prior}
