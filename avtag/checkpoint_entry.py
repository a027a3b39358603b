"""The ``"avtag"`` entry of a training checkpoint, and the rest of the checkpoint kept to plain types.

:class:`avtag.tagging_module.TaggingModule` writes this entry into every checkpoint (model name
and arguments, unprefixed weights, front-end config and state, classes, the thresholds tuned on
validation, metadata); :meth:`avtag.audio.tagger.AudioTagger.from_pretrained` and
:mod:`avtag.resume` read it with ``torch.load(weights_only=True)``, so nothing in it may need
unpickling: every value is reduced to JSON-like containers, numbers, strings and tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

# checkpoint entries that LightningCLI fills with configured objects: reduced to plain types
HYPER_PARAMETER_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")


def plain(value: Any) -> Any:
    """``value`` reduced to what ``torch.load(weights_only=True)`` accepts: JSON-like
    containers, numbers, strings, tensors; callables and classes become their import path."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def _cpu_state(module: nn.Module | None) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()} if module is not None else {}


def avtag_entry(
    model: nn.Module,
    frontend: nn.Module | None,
    classes: Sequence[str],
    thresholds: Sequence[float],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint's ``"avtag"`` entry for a registered ``model`` (with ``model_name`` and
    ``model_args``) behind ``frontend`` (a :class:`~avtag.audio.features.LogMelFrontEnd`, or None
    for a model of precomputed features)."""
    return {
        "model_name": model.model_name,
        "model_args": plain(model.model_args),
        "state_dict": _cpu_state(model),
        "frontend": frontend.config if frontend is not None else None,
        "frontend_state": _cpu_state(frontend),
        "classes": list(classes),
        "thresholds": [float(t) for t in thresholds],
        "metadata": plain(metadata),
    }


def make_hyper_parameters_plain(checkpoint: dict[str, Any]) -> None:
    """Reduce the hyper-parameter entries Lightning writes to plain types, in place, so that
    Lightning can resume from the file with ``weights_only`` loading."""
    for key in HYPER_PARAMETER_KEYS:
        if key in checkpoint:
            checkpoint[key] = plain(dict(checkpoint[key]))


__all__ = ["HYPER_PARAMETER_KEYS", "avtag_entry", "make_hyper_parameters_plain", "plain"]
