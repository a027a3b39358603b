"""Scores for weak tagging (DCASE 2017 Task 4 subtask A), ranking and strong localisation.

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

Prediction file format (:func:`write_tag_file`, :func:`read_tag_file`): one row per tag,
``file<TAB>start<TAB>end<TAB>label``, where ``file`` is the organisers' spelling
(``-5QrBL6MzLg_60.000_70.000.wav``) and start/end are the clip's times in its source video. A
clip with no tag is written as a row holding only its file name, as in the organisers'
``prediction_missing.csv`` fixture; the official scorer reads it as "no labels". As in the
official reader, a 4-column row whose end time is 0 is a "not audible" row and carries no tag.

Choices where the paper is silent:

* Macro d-prime is ``sqrt(2) * norm.ppf(mean AUC)`` (the AudioSet convention), not the mean of
  per-class d-primes; classes without positives or without negatives get NaN AP/AUC, are
  skipped in the means and listed in ``skipped``.
* Segment-based localisation F1 follows sed_eval's segment-based metric: 1 s segments, an event
  marks segments ``floor(onset / 1 s)`` to ``ceil(offset / 1 s)``; estimated events are runs of
  frames at or above the class threshold; counts are summed over classes and segments (micro).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.atomic import write_text
from avtag.baselines import BaselineScores, baseline_scores  # noqa: F401 - part of this module's API
from avtag.data.dcase17 import clip_id, official_file_name, parse_clip_id
from avtag.data.manifests import EventSpan
from avtag.errors import InputFileError

# ----------------------------------------------------------------------------- subtask A


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


def _strip_audio_extension(name: str) -> str:
    """The official reader's file key: the name up to ``.wav`` / ``.flac``."""
    return name.split(".wav")[0].split(".flac")[0].strip()


def _match_key(name: str, official: bool) -> str:
    if official:
        return _strip_audio_extension(name)
    parsed = parse_clip_id(name)
    if parsed is None:
        return _strip_audio_extension(os.path.basename(name.strip()))
    return clip_id(*parsed)


def read_tag_file(path: str | Path, official: bool = False) -> dict[str, list[str]]:
    """Clip -> predicted (or ground-truth) labels of a ``file<TAB>start<TAB>end<TAB>label`` file.

    Keys are canonical clip ids (``official=False``; names that are not clip names are kept
    as they are, minus the extension) or the raw name minus ``.wav``/``.flac`` (``official=True``).
    A row with only a file name (or an empty label) registers the clip with no label. A
    4-column row whose end is 0 is a "not audible" row: no label (with ``official=True`` the clip
    is not even registered by it, as in the official reader).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such prediction/ground-truth file", path)
    tags: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if not fields[0].strip():
                continue
            key = _match_key(fields[0], official)
            label = fields[3].strip() if len(fields) > 3 else ""
            if len(fields) == 4:
                try:
                    not_audible = float(fields[2].strip()) == 0.0
                except ValueError:
                    raise InputFileError(f"line {lineno}: end time {fields[2]!r} is not a number", path) from None
                if not_audible:
                    if not official:
                        tags.setdefault(key, [])
                    continue
            labels = tags.setdefault(key, [])
            if label:
                labels.append(label)
    return tags


def write_tag_file(
    path: str | Path,
    tags: Mapping[str, Iterable[str]],
    times: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Write clip tags in the official prediction format (one row per tag; see module doc).

    Keys are clip ids in any spelling; rows use the organisers' file spelling and the clip's
    start/end parsed from its id (or from ``times``). A clip with no tag gets a file-name-only
    row, so the file has a row for every clip.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for key, labels in tags.items():
        parsed = parse_clip_id(key)
        name = official_file_name(key) if parsed is not None else key
        if times is not None and key in times:
            start, end = times[key]
        elif parsed is not None:
            start, end = parsed[1], parsed[2]
        else:
            raise ValueError(f"no start/end for {key!r}: pass times")
        labels = list(dict.fromkeys(labels))
        if not labels:
            lines.append(name)
        for label in labels:
            if "\t" in label or "\n" in label:
                raise ValueError(f"label {label!r} contains a tab or newline")
            lines.append(f"{name}\t{start:.3f}\t{end:.3f}\t{label}")
    write_text(path, "".join(line + "\n" for line in lines))  # temporary file + rename
    return path


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
        gt = {_match_key(str(k), False): list(dict.fromkeys(v)) for k, v in ground_truth.items()}
        pred = {}
        for k, v in predictions.items():
            pred.setdefault(_match_key(str(k), False), []).extend(v)
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


# ----------------------------------------------------------------------------- ranking


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


# ----------------------------------------------------------------------------- localisation


@dataclass(frozen=True)
class SegmentScores(ClassScores):
    """Segment-based counts (micro over classes) and the derived scores."""


def _span_segments(onset: float, offset: float, segment: float, num_segments: int) -> slice:
    first = int(math.floor(onset / segment + 1e-9))
    last = int(math.ceil(offset / segment - 1e-9))
    return slice(max(first, 0), min(max(last, first + 1), num_segments))


def frames_to_events(
    active: np.ndarray, frame_hop: float, classes: Sequence[str]
) -> list[EventSpan]:
    """Runs of active frames ``(T', C)`` as events; frame ``t`` covers ``[t*hop, (t+1)*hop)``."""
    events = []
    active = np.asarray(active, dtype=bool)
    padded = np.zeros((active.shape[0] + 2, active.shape[1]), dtype=np.int8)
    padded[1:-1] = active
    change = np.diff(padded, axis=0)
    for c, name in enumerate(classes):
        starts = np.flatnonzero(change[:, c] == 1)
        stops = np.flatnonzero(change[:, c] == -1)
        events.extend(EventSpan(name, s * frame_hop, e * frame_hop) for s, e in zip(starts, stops, strict=True))
    return events


def segment_based_f1(
    frame_probs: Sequence[np.ndarray] | np.ndarray,
    frame_hop: float,
    thresholds: Sequence[float] | np.ndarray,
    events: Sequence[Sequence[EventSpan]],
    classes: Sequence[str],
    segment_length: float = 1.0,
    clip_durations: Sequence[float] | None = None,
) -> SegmentScores:
    """Segment-based localisation F1 (sed_eval style, micro over classes) over a set of clips.

    ``frame_probs[i]`` is clip i's ``(T', C)`` frame probabilities, one frame per ``frame_hop``
    seconds; a frame is active where its probability is ``>= thresholds[c]``. ``events[i]`` are
    the true spans (labels outside ``classes`` are ignored). A clip spans
    ``clip_durations[i]`` seconds (default ``T' * frame_hop``, extended to the last event).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    index = {name: c for c, name in enumerate(classes)}
    if len(frame_probs) != len(events):
        raise ValueError(f"{len(frame_probs)} clips of frame probabilities but {len(events)} event lists")
    tp = fp = fn = 0
    for i, (probs, truth) in enumerate(zip(frame_probs, events, strict=True)):
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != len(classes):
            raise ValueError(f"clip {i}: frame probabilities must be (T', {len(classes)}), got {probs.shape}")
        estimated = frames_to_events(probs >= thresholds, frame_hop, classes)
        duration = clip_durations[i] if clip_durations is not None else probs.shape[0] * frame_hop
        end = max([duration] + [e.offset for e in truth if e.label in index])
        num_segments = max(1, int(math.ceil(end / segment_length - 1e-9)))
        reference_roll = np.zeros((num_segments, len(classes)), dtype=bool)
        estimated_roll = np.zeros_like(reference_roll)
        for roll, spans in ((reference_roll, truth), (estimated_roll, estimated)):
            for span in spans:
                if span.label in index and span.offset > span.onset:
                    roll[_span_segments(span.onset, span.offset, segment_length, num_segments), index[span.label]] = True
        tp += int(np.sum(reference_roll & estimated_roll))
        fp += int(np.sum(~reference_roll & estimated_roll))
        fn += int(np.sum(reference_roll & ~estimated_roll))
    return SegmentScores(tp, fp, fn)
