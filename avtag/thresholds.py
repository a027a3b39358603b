"""Class-specific decision thresholds tuned for micro-F1 (paper 004 §3.3).

The procedure of §3.3: (1) tune each class's threshold to maximise that class's F1; (2)
repeatedly pick a random class and re-tune its threshold to maximise the micro-averaged F1
over all classes, until no improvement can be made. Decisions are ``score >= threshold``
(as in :meth:`avtag.audio.tagger.AudioTagger.decide`). Tune on validation data only and apply
the thresholds unchanged to test/evaluation data.

Choices where the paper is silent:

* Candidate thresholds of a class are the midpoints between its sorted unique scores, plus
  one just below the lowest score (everything positive) and one just above the highest
  (nothing positive; ``nextafter``), so every distinct decision is reachable and a threshold
  never sits exactly on a training score.
* "No improvement": step (2) runs in passes; a pass visits every class once in an order
  shuffled by ``seed``; a class's threshold changes only if micro-F1 rises by more than
  ``1e-12``; tuning stops after the first pass without a change (or ``max_passes``). At that
  point no single class's threshold can raise micro-F1, which is what "no improvements could
  be made" means for this coordinate search.
* Ties: in step (1) among equally good candidates the one closest to 0.5 is taken; in step
  (2) the one closest to the class's current threshold.
* A class without positives in the tuning data has no threshold to learn (its F1 is 0 for
  every threshold, and "just above its highest score" can be ~0.003 for a model that
  scores it low, which then fires on almost any test clip). It gets
  ``ABSENT_CLASS_THRESHOLD`` = 0.5 (our documented choice: the decision boundary of a
  calibrated probability), is left out of step (2), and is listed in
  ``ThresholdResult.absent_classes`` so that callers warn. Its false positives on the
  tuning data still count in the reported micro-F1.
* F1 with no positives predicted and none true is 0 (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_GAIN = 1e-12
ABSENT_CLASS_THRESHOLD = 0.5  # our documented choice, see the module docstring


@dataclass
class ThresholdResult:
    """Tuned thresholds and the micro-F1 they reach on the data they were tuned on."""

    thresholds: np.ndarray
    micro_f1: float
    class_f1_thresholds: np.ndarray
    class_f1_micro_f1: float
    passes: int
    absent_classes: list[int] = field(default_factory=list)

    def absent_warning(self, classes: list[str] | None = None) -> str | None:
        """One line naming the classes without tuning positives, or None when there are none."""
        if not self.absent_classes:
            return None
        names = [classes[c] if classes is not None else str(c) for c in self.absent_classes]
        return (
            f"{len(names)} class(es) have no positive clip in the threshold-tuning data and get the default "
            f"threshold {ABSENT_CLASS_THRESHOLD}: {', '.join(names)}"
        )


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must both be (N, C)")
    if not np.isfinite(y_score).all():
        raise ValueError("scores contain NaN or infinity")
    return y_true, y_score


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Ascending candidates for one class: below-all, midpoints of unique scores, above-all."""
    unique = np.unique(np.asarray(scores, dtype=np.float64))
    if unique.size == 0:
        return np.array([0.5])
    low = np.nextafter(unique[0], -np.inf)
    high = np.nextafter(unique[-1], np.inf)
    return np.concatenate([[low], (unique[:-1] + unique[1:]) / 2.0, [high]])


def _counts(truth: np.ndarray, scores: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of ``scores >= t`` for every candidate ``t`` (vectorised)."""
    sorted_all = np.sort(scores)
    sorted_pos = np.sort(scores[truth])
    predicted = len(sorted_all) - np.searchsorted(sorted_all, candidates, side="left")
    tp = len(sorted_pos) - np.searchsorted(sorted_pos, candidates, side="left")
    return tp, predicted - tp


def _f1(tp: np.ndarray | int, fp: np.ndarray | int, fn: np.ndarray | int) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def micro_f1(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray | float) -> float:
    """Micro-F1 of ``y_score >= thresholds`` against ``y_true`` (both (N, C))."""
    y_true, y_score = _check(y_true, y_score)
    predicted = y_score >= np.asarray(thresholds, dtype=np.float64)
    tp = int(np.sum(predicted & y_true))
    fp = int(np.sum(predicted & ~y_true))
    fn = int(np.sum(~predicted & y_true))
    return float(_f1(tp, fp, fn))


def _closest(candidates: np.ndarray, values: np.ndarray, target: float) -> int:
    """Index of the best value, ties broken by closeness of the candidate to ``target``."""
    best = np.flatnonzero(values >= values.max() - 1e-15)
    return int(best[np.argmin(np.abs(candidates[best] - target))])


def class_f1_thresholds(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Step (1) of §3.3: each class's threshold maximising its own F1."""
    y_true, y_score = _check(y_true, y_score)
    thresholds = np.empty(y_true.shape[1])
    for c in range(y_true.shape[1]):
        candidates = candidate_thresholds(y_score[:, c])
        if not y_true[:, c].any():
            thresholds[c] = ABSENT_CLASS_THRESHOLD
            continue
        tp, fp = _counts(y_true[:, c], y_score[:, c], candidates)
        f1 = _f1(tp, fp, y_true[:, c].sum() - tp)
        thresholds[c] = candidates[_closest(candidates, f1, 0.5)]
    return thresholds


def tune_thresholds(
    y_true: np.ndarray, y_score: np.ndarray, seed: int = 0, max_passes: int = 100
) -> ThresholdResult:
    """Steps (1) and (2) of §3.3: class-wise F1 start, then random-class micro-F1 re-tuning."""
    y_true, y_score = _check(y_true, y_score)
    rng = np.random.default_rng(seed)
    num_classes = y_true.shape[1]
    start = class_f1_thresholds(y_true, y_score)
    thresholds = start.copy()
    candidates = [candidate_thresholds(y_score[:, c]) for c in range(num_classes)]
    counts = [_counts(y_true[:, c], y_score[:, c], candidates[c]) for c in range(num_classes)]
    positives = y_true.sum(axis=0)
    predicted = y_score >= thresholds
    class_tp = np.sum(predicted & y_true, axis=0)
    class_fp = np.sum(predicted & ~y_true, axis=0)
    total_positives = int(positives.sum())
    best = float(_f1(class_tp.sum(), class_fp.sum(), total_positives - class_tp.sum()))
    start_f1 = best
    absent = [int(c) for c in np.flatnonzero(positives == 0)]
    passes = 0
    while passes < max_passes:
        passes += 1
        changed = False
        for c in rng.permutation(num_classes):
            if positives[c] == 0:
                continue
            tp_c, fp_c = counts[c]
            tp = class_tp.sum() - class_tp[c] + tp_c
            fp = class_fp.sum() - class_fp[c] + fp_c
            f1 = _f1(tp, fp, total_positives - tp)
            k = _closest(candidates[c], f1, thresholds[c])
            if f1[k] > best + _GAIN:
                best = float(f1[k])
                thresholds[c] = candidates[c][k]
                class_tp[c], class_fp[c] = tp_c[k], fp_c[k]
                changed = True
        if not changed:
            break
    return ThresholdResult(
        thresholds=thresholds, micro_f1=best, class_f1_thresholds=start, class_f1_micro_f1=start_f1, passes=passes,
        absent_classes=absent,
    )
