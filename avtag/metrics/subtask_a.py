"""Scores for weak tagging, DCASE 2017 Task 4 subtask A.

Subtask A (:func:`score_tagging`) counts (clip, label) pairs: a predicted label that is in a
clip's ground truth is a true positive, one that is not is a false positive, and a ground-truth
label not predicted is a false negative; precision, recall and F1 are micro-averaged over all
pairs (the challenge's ranking metric) and also reported per class.

Two behaviours, chosen explicitly:

* default (``official=False``): every ground-truth clip is scored. A clip absent from the
  prediction file counts as "no tags" (its labels are misses, listed in ``missing_files``).
  Predicted labels are sets (a repeated row counts once). Clip names are matched in any
  official spelling (with or without the leading ``Y``, with ``.wav``/``.flac``).
* ``official=True``: the organisers' ``TaskAEvaluate.py`` as published: only clips present in
  the prediction file are scored (absent ones are silently ignored), names are matched exactly
  after cutting ``.wav``/``.flac``, and a label predicted twice for a clip is a true positive
  once and a false positive after that. It reproduces the organisers' fixture outputs to the
  printed digit (:func:`format_official_report`).

In both modes predicted clips that are not in the ground truth are ignored and listed in
``unknown_files``; ``strict=True`` turns missing or unknown clips into an
:class:`~avtag.errors.InputFileError` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.errors import InputFileError
from avtag.metrics.tag_files import match_key, read_tag_file


@dataclass(frozen=True)
class ClassScores:
    """Counts and scores of one class."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class TaggingScores:
    """Subtask A scores; ``precision``/``recall``/``f1`` are micro-averaged fractions (0-1)."""

    micro: ClassScores
    class_wise: dict[str, ClassScores]
    num_files: int
    missing_files: list[str] = field(default_factory=list)
    unknown_files: list[str] = field(default_factory=list)
    official: bool = False

    @property
    def precision(self) -> float:
        return self.micro.precision

    @property
    def recall(self) -> float:
        return self.micro.recall

    @property
    def f1(self) -> float:
        return self.micro.f1

    def macro_f1(self) -> float:
        """Mean of the class-wise F1 scores (classes in ``class_wise``)."""
        return float(np.mean([s.f1 for s in self.class_wise.values()])) if self.class_wise else 0.0


def score_tagging(
    ground_truth: Mapping[str, Iterable[str]],
    predictions: Mapping[str, Iterable[str]],
    official: bool = False,
    strict: bool = False,
    classes: Sequence[str] | None = None,
) -> TaggingScores:
    """Subtask A precision/recall/F1 of ``predictions`` against ``ground_truth``.

    Both map clip -> labels. ``official`` and ``strict`` are described in the module
    docstring. ``classes`` fixes the class-wise table (default: every label seen in either).
    """
    if official:
        gt = {str(k): list(v) for k, v in ground_truth.items()}
        pred = {str(k): list(v) for k, v in predictions.items()}
    else:
        gt = {match_key(str(k), False): list(dict.fromkeys(v)) for k, v in ground_truth.items()}
        pred = {}
        for k, v in predictions.items():
            pred.setdefault(match_key(str(k), False), []).extend(v)
        pred = {k: list(dict.fromkeys(v)) for k, v in pred.items()}
    missing = [k for k in gt if k not in pred]
    unknown = [k for k in pred if k not in gt]
    if strict and (missing or unknown):
        problems = []
        if missing:
            problems.append(f"{len(missing)} of {len(gt)} clips have no prediction (first: {missing[0]})")
        if unknown:
            problems.append(f"{len(unknown)} predicted clips are not in the ground truth (first: {unknown[0]})")
        raise InputFileError("invalid prediction: " + "; ".join(problems))

    scored = [k for k in pred if k in gt] if official else list(gt)
    tp = fp = fn = 0
    per_class: dict[str, list[int]] = {}

    def bump(label: str, slot: int) -> None:
        per_class.setdefault(label, [0, 0, 0])[slot] += 1

    for key in scored:
        truth = gt[key]
        predicted = pred.get(key, [])
        # micro counts: each ground-truth label can be matched once (official duplicate rule)
        matched = [False] * len(truth)
        for label in predicted:
            for i, true_label in enumerate(truth):
                if label == true_label and not matched[i]:
                    matched[i] = True
                    tp += 1
                    break
            else:
                fp += 1
        fn += matched.count(False)
        # class-wise counts: membership tests, as in the official scorer
        for true_label in truth:
            bump(true_label, 0 if true_label in predicted else 2)
        for label in predicted:
            if label not in truth:
                bump(label, 1)
    names = list(classes) if classes is not None else sorted(per_class)
    class_wise = {name: ClassScores(*per_class.get(name, [0, 0, 0])) for name in names}
    return TaggingScores(
        micro=ClassScores(tp, fp, fn),
        class_wise=class_wise,
        num_files=len(gt),
        missing_files=missing,
        unknown_files=unknown,
        official=official,
    )


def score_tag_files(
    groundtruth_path: str | Path, prediction_path: str | Path, official: bool = False, strict: bool = False
) -> TaggingScores:
    """:func:`score_tagging` of two files in the official format (errors name the prediction file)."""
    ground_truth = read_tag_file(groundtruth_path, official=official)
    predictions = read_tag_file(prediction_path, official=official)
    try:
        return score_tagging(ground_truth, predictions, official=official, strict=strict)
    except InputFileError as err:
        raise InputFileError(str(err), prediction_path) from None


def _py2_float(value: float) -> str:
    """A float as Python 2's ``str()`` printed it (12 significant digits), as the scorer did."""
    return repr(float(f"{value:.12g}"))


def format_official_report(scores: TaggingScores) -> str:
    """The four-line summary of the organisers' scorer (percentages), byte for byte."""
    return (
        f"Precision = {_py2_float(scores.precision * 100.0)}\n"
        f"Recall = {_py2_float(scores.recall * 100.0)}\n"
        f"F1 Score = {_py2_float(scores.f1 * 100.0)}\n"
        f"Number of Audio Files = {scores.num_files}"
    )


__all__ = ["ClassScores", "TaggingScores", "format_official_report", "score_tag_files", "score_tagging"]
