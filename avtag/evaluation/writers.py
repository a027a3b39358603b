"""The output files of batch evaluation, every one written atomically (:mod:`avtag.atomic`).

* :func:`write_probabilities`: THE probabilities CSV of avtag (``id`` then one column per class,
  the model's own class names; one number format, :data:`PROBABILITY_FORMAT`; an empty cell
  where the branch could not run). :func:`parse_probability` reads a cell back strictly.
* :func:`write_predictions`: the DCASE 2017 subtask A prediction file with ONE spelling of the
  clip names in a file: the organisers' spelling when every clip id is a DCASE clip name, else
  the ids exactly as given.
* :func:`write_failures`, :func:`write_per_class`, and the strict metrics JSON.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avtag.atomic import atomic_write, write_json

PROBABILITY_FORMAT = "{:.6f}"  # 6 decimals: below any threshold resolution that matters, stable bytes


def format_probability(value: float) -> str:
    """One probability cell: :data:`PROBABILITY_FORMAT`, or empty for NaN (branch did not run)."""
    value = float(value)
    if math.isnan(value):
        return ""
    if not math.isfinite(value):
        raise ValueError(f"probability {value} is not finite")
    return PROBABILITY_FORMAT.format(value)


def parse_probability(cell: str) -> float:
    """A cell written by :func:`format_probability`: NaN for empty, else a finite number in [0, 1]."""
    if cell == "":
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{cell!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{cell!r} is not a probability (finite, in [0, 1])")
    return value


def write_probabilities(path: str | Path, ids: Sequence[str], classes: Sequence[str], probs: np.ndarray) -> Path:
    """The clip x class probability matrix as CSV (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(len(ids), len(classes))
    with atomic_write(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", *classes])
        for clip, row in zip(ids, probs, strict=True):
            writer.writerow([clip, *(format_probability(p) for p in row)])
    return Path(path)


def prediction_names(ids: Sequence[str]) -> dict[str, str]:
    """Clip id -> the name written in a prediction file: one spelling for the whole file."""
    from avtag.data.dcase17 import official_file_name, parse_clip_id

    if ids and all(parse_clip_id(i) is not None for i in ids):
        return {i: official_file_name(i) for i in ids}
    return {i: i for i in ids}


def write_predictions(path: str | Path, tags: Mapping[str, Iterable[str]],
                      times: Mapping[str, tuple[float, float]]) -> Path:
    """Subtask A prediction file (``file<TAB>start<TAB>end<TAB>label``; a name-only row for no tag)."""
    names = prediction_names(list(tags))
    lines = []
    for clip, labels in tags.items():
        name = names[clip]
        if "\t" in name or "\n" in name:
            raise ValueError(f"clip id {clip!r} contains a tab or newline")
        start, end = times[clip]
        labels = list(dict.fromkeys(labels))
        if not labels:
            lines.append(name)
        lines.extend(f"{name}\t{start:.3f}\t{end:.3f}\t{label}" for label in labels)
    with atomic_write(path) as fh:
        fh.write("".join(line + "\n" for line in lines))
    return Path(path)


def write_failures(path: str | Path, failures: Sequence[tuple[str, str, str]]) -> Path:
    """``id,path,reason`` of the clips that could not be processed."""
    with atomic_write(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "path", "reason"])
        writer.writerows(failures)
    return Path(path)


def write_per_class(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Per-class and micro precision/recall/F1 of every system (a system's own classes; blank elsewhere)."""
    systems = metrics["systems"]
    names: list[str] = []
    for data in systems.values():
        names.extend(n for n in data["class_wise"] if n not in names)
    with atomic_write(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["event", *(f"{s}_{m}" for s in systems for m in ("precision", "recall", "f1"))])
        for name in [*names, "micro"]:
            row = [name]
            for data in systems.values():
                source = data if name == "micro" else data["class_wise"].get(name)
                row += (["", "", ""] if source is None else
                        [f"{source['precision']:.4f}", f"{source['recall']:.4f}", f"{source['f1']:.4f}"])
            writer.writerow(row)
    return Path(path)


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Strict JSON (``allow_nan=False``): undefined scores are ``null``."""
    return write_json(path, _finite(metrics), indent=1)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
