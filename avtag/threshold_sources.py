"""Where an evaluation's decision thresholds come from (``--thresholds-from``): the thresholds
saved with the model, a ``thresholds.json``, or a separate validation set to tune them on with
the iterative procedure of 004 §3.3 (:func:`avtag.thresholds.tune_thresholds`).

One helper for every evaluator (waveform models on a manifest, feature models on an embedding
store); each evaluator brings its own check that the validation set shares no clip with the
evaluated one and its own model run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from avtag.errors import InputFileError
from avtag.validate import read_json, require_finite

SAVED = "saved"


def thresholds_json(path: Path, classes: list[str]) -> np.ndarray:
    """Thresholds for ``classes`` from a ``thresholds.json`` (``{"classes", "thresholds"}`` or
    ``{class: threshold}``), finite and in [0, 1]."""
    data = read_json(path, "a thresholds JSON file")
    try:
        if isinstance(data, dict) and "thresholds" in data:
            names = data.get("classes", classes)
            values = dict(zip(names, data["thresholds"], strict=True))
        elif isinstance(data, dict):
            values = dict(data)
        else:
            raise TypeError("expected an object")
        picked = [values[name] for name in classes]
    except (ValueError, TypeError, KeyError) as err:
        raise InputFileError(f"not a thresholds file for this model's {len(classes)} classes ({err})", path) from None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in picked):
        raise InputFileError("thresholds must be numbers", path)
    return require_finite(picked, "thresholds", path, low=0.0, high=1.0)


def thresholds_from_source(
    source: str,
    classes: list[str],
    saved: Sequence[float],
    validation_kind: str,
    validation_scores: Callable[[Path], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, str]:
    """Thresholds for ``classes`` from ``source`` and a description of where they came from.

    ``source`` is :data:`SAVED` (``saved``, the model's own), a ``.json`` file
    (:func:`thresholds_json`) or a validation set (``validation_kind`` names it in errors):
    ``validation_scores(path)`` checks it and returns its binary targets ``(N, C)`` and the
    model's probabilities ``(N, C)``, on which the thresholds are tuned (004 §3.3). Classes
    without a validation positive get the documented default, with a warning on stderr.
    """
    if source == SAVED:
        return np.asarray(saved, dtype=np.float64), "saved with the model (tuned on validation in training)"
    path = Path(source)
    if not path.is_file():
        raise InputFileError(f"no such thresholds file or {validation_kind}", path)
    if path.suffix == ".json":
        return thresholds_json(path, classes), f"file {path}"
    from avtag.thresholds import tune_thresholds

    targets, probs = validation_scores(path)
    tuned = tune_thresholds(targets, probs)
    warning = tuned.absent_warning(classes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return np.asarray(tuned.thresholds, dtype=np.float64), f"tuned on {path} (004 section 3.3)"


__all__ = ["SAVED", "thresholds_from_source", "thresholds_json"]
