"""Resuming from a checkpoint without running anything the checkpoint says.

LightningCLI, given ``--ckpt_path``, copies the checkpoint's ``hyper_parameters`` into the
configuration and instantiates what it finds there: a ``{"class_path": "subprocess.Popen",
"init_args": ...}`` placed under ``metadata`` (typed ``dict[str, Any]``) would run, although the
file passed ``torch.load(weights_only=True)``. And Lightning unpickles a URL ``ckpt_path`` with
``weights_only=False``. :func:`check_ckpt_path` and :func:`resume_overrides` close both:

* ``ckpt_path`` must be a local, readable file (or one of Lightning's keywords ``last``,
  ``best``, ``hpc``, which name files its own callbacks wrote); a URL is refused;
* the file is read with ``weights_only=True`` and must carry avtag's own ``"avtag"`` entry;
* a ``class_path``/``init_args``/``_class_path`` key anywhere in the checkpoint is refused, with
  one exception: the top-level ``optimizer`` and ``scheduler`` of ``hyper_parameters``, where
  avtag's own checkpoints record the configured callables (``torch.optim.Adam``...), and the
  data module's name (a string) that LightningCLI records as
  ``datamodule_hyper_parameters._class_path``. Those are never applied: the configuration's
  own optimizer, scheduler and data module are used;
* the configuration is rebuilt from the ``"avtag"`` entry only (model name, model arguments,
  class list: plain JSON values); ``hyper_parameters`` are never applied.

Every refusal is one :class:`~avtag.errors.CheckpointError` line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avtag.errors import CheckpointError

LIGHTNING_KEYWORDS = ("last", "best", "hpc")
INSTANTIATION_KEYS = ("class_path", "init_args", "_class_path", "dict_kwargs")
# hyper_parameters entries where avtag's own checkpoints record configured callables (never applied)
RECORDED_CALLABLES = ("optimizer", "scheduler")


def check_ckpt_path(ckpt_path: Any) -> Path | None:
    """The local checkpoint file named by ``ckpt_path`` (None for Lightning's keywords); one
    line for a URL, a missing, unreadable or empty file."""
    if ckpt_path is None or ckpt_path in LIGHTNING_KEYWORDS:
        return None
    text = str(ckpt_path)
    if "://" in text or text.startswith(("http:", "https:", "s3:", "gs:", "hf:")):
        raise CheckpointError("only local checkpoint files can be resumed from (a URL would be unpickled"
                              " without weights_only); download it and pass the local path", text)
    path = Path(text)
    if not path.exists():
        raise CheckpointError("no such checkpoint", path)
    if not path.is_file():
        raise CheckpointError("is not a file, expected a Lightning .ckpt", path)
    if path.stat().st_size == 0:
        raise CheckpointError("empty file (0 bytes), expected a Lightning .ckpt", path)
    return path


def find_instantiation(value: Any, where: str = "") -> str | None:
    """The location of the first ``class_path``-like key in ``value`` (None if there is none)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if key in INSTANTIATION_KEYS:
                return here
            found = find_instantiation(item, here)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = find_instantiation(item, f"{where}[{i}]")
            if found:
                return found
    return None


def _recorded_callable(value: Any) -> bool:
    """A configured callable as avtag's checkpoints record it: ``{"class_path": "torch.optim...",
    "init_args": {plain values}}`` (or a plain import-path string)."""
    if isinstance(value, str) or value is None:
        return True
    return (
        isinstance(value, dict)
        and set(value) <= {"class_path", "init_args"}
        and isinstance(value.get("class_path"), str)
        and find_instantiation(value.get("init_args") or {}) is None
    )


def load_resume_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` read weights-only and checked as the module docstring says."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any load failure is a bad file
        raise CheckpointError(f"not a readable checkpoint ({type(err).__name__})", path) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("avtag"), dict):
        raise CheckpointError("not an avtag training checkpoint (no 'avtag' entry)", path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError("hyper_parameters is not a mapping", path)
    for key in RECORDED_CALLABLES:
        if key in hparams and not _recorded_callable(hparams[key]):
            raise CheckpointError(f"refusing to resume: hyper_parameters.{key} is not a recorded optimizer/scheduler", path)
    data_hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    if not isinstance(data_hparams, dict):
        raise CheckpointError("datamodule_hyper_parameters is not a mapping", path)
    if not isinstance(data_hparams.get("_class_path", ""), str):
        raise CheckpointError("refusing to resume: datamodule_hyper_parameters._class_path is not a name", path)
    rest = {k: v for k, v in checkpoint.items() if k not in ("hyper_parameters", "datamodule_hyper_parameters")}
    rest["hyper_parameters"] = {k: v for k, v in hparams.items() if k not in RECORDED_CALLABLES}
    rest["datamodule_hyper_parameters"] = {k: v for k, v in data_hparams.items() if k != "_class_path"}
    found = find_instantiation(rest)
    if found:
        raise CheckpointError(f"refusing to resume: the checkpoint asks to instantiate a class ({found})", path)
    return checkpoint


def resume_overrides(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``model`` settings rebuilt from the checkpoint's ``"avtag"`` entry (plain JSON values)."""
    entry = checkpoint["avtag"]
    name, args, classes = entry.get("model_name"), entry.get("model_args"), entry.get("classes")
    if not isinstance(name, str) or not isinstance(args, dict):
        raise CheckpointError("the 'avtag' entry has no model_name/model_args", path)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError("the 'avtag' entry has no class list", path)
    return {"model_name": name, "model_args": args, "classes": classes}


__all__ = ["check_ckpt_path", "find_instantiation", "load_resume_checkpoint", "resume_overrides"]
