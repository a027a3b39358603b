"""One device choice for every entry point.

``None`` or ``"auto"``: CUDA when available, else CPU. An explicit ``cuda`` without a GPU, or an
unknown device string, is a one-line user error rather than a traceback deep inside torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from avtag.errors import AvtagError

if TYPE_CHECKING:
    import torch


def resolve_device(device: "str | torch.device | None" = None) -> "torch.device":
    """``device`` as a :class:`torch.device` (see the module docstring)."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str):
        raise AvtagError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AvtagError(f"device {device!r} requested but no CUDA device is available")
        try:
            parsed = torch.device(device)
        except RuntimeError:
            raise AvtagError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise AvtagError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return parsed
    if device == "cpu":
        return torch.device("cpu")
    raise AvtagError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
