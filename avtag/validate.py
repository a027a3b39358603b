"""Reading numbers from files: strict JSON and finite values only.

Everything avtag reads from a user's file (fusion files, thresholds, config.json, manifests)
goes through :func:`read_json`, which refuses ``NaN``/``Infinity`` literals, and
:func:`require_finite`, which refuses non-finite arrays. A NaN that slips through turns into
silent non-detections and invalid JSON downstream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import InputFileError, check_input_file


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (not valid JSON)")


def read_json(path: str | Path, what: str = "a JSON file", error: type[InputFileError] = InputFileError) -> Any:
    """Parse ``path`` as strict JSON; any problem is one line of ``error`` naming the file."""
    path = check_input_file(path, what, error)
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        raise error("permission denied", path) from None
    except UnicodeDecodeError:
        raise error(f"not UTF-8 text, expected {what}", path) from None
    except OSError as err:
        raise error(f"cannot read: {err.strerror or err}", path) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:
        raise error(f"not valid JSON ({err}), expected {what}", path) from None


def require_finite(values: Any, what: str, path: str | Path | None = None,
                   error: type[InputFileError] = InputFileError,
                   low: float | None = None, high: float | None = None) -> np.ndarray:
    """``values`` as a float64 array, refusing non-numbers, NaN/inf and values outside [low, high]."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise error(f"{what} must be numbers", path) from None
    if not np.all(np.isfinite(array)):
        raise error(f"{what} holds a non-finite value (NaN or infinity)", path)
    if low is not None and np.any(array < low):
        raise error(f"{what} must be >= {low}", path)
    if high is not None and np.any(array > high):
        raise error(f"{what} must be <= {high}", path)
    return array
