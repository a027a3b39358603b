"""What every audio tagging model shares: one output type, one loss hook, one
serialised form, and a registry.

Serialisation follows asteroid: ``model.serialize()`` gives
``{"model_name", "model_args", "state_dict"}`` and :func:`from_pretrained` rebuilds the
model from such a dict (or a file holding one) without ever unpickling code.

Models take log-mel features ``(batch, frames, mel_bins)`` from
:class:`avtag.audio.features.LogMelFrontEnd`, never waveforms, so any front-end preset
can feed any model and GL-AT can crop local clips directly from the feature map.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.errors import CheckpointError

EPS = 1e-7


@dataclass
class TaggingOutput:
    """What every model's ``forward`` returns.

    clip_probs:   (batch, classes) clip-level probabilities in [0, 1].
    frame_probs:  (batch, segments, classes) frame- or segment-level probabilities, the
                  model's own time resolution (``segments`` may be fewer than the input
                  frames). ``None`` only for models with no temporal output.
    attention:    named attention maps (e.g. ``"time"``: (batch, segments, classes)),
                  for reports and tests.
    extras:       anything a model's ``loss`` needs beyond the clip probabilities
                  (per-level predictions, local-stream scores, ...).
    frame_hop:    seconds between consecutive entries of ``frame_probs``; filled in by
                  :class:`avtag.audio.tagger.AudioTagger`, which knows the front-end
                  (see :func:`segment_hop_seconds`).
    frame_stride: input feature frames between consecutive entries of ``frame_probs``:
                  the model's real pooling stride (``frame_probs`` has
                  ``ceil(frames / frame_stride)`` entries). Set by every model.
    """

    clip_probs: Tensor
    frame_probs: Tensor | None = None
    attention: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    frame_hop: float | None = None
    frame_stride: int | None = None


def segment_hop_seconds(output: TaggingOutput, input_hop_seconds: float, input_frames: int) -> float | None:
    """Seconds between consecutive ``frame_probs`` entries.

    ``frame_stride * input_hop_seconds`` when the model states its stride: with ceil
    pooling a 1000-frame input pooled by 32 gives 32 segments 0.32 s apart, not
    1000 / 32 * 0.01 = 0.3125 s (which would put late onsets up to 0.23 s early). Models
    without a stated stride fall back to ``input_frames / segments`` input hops.
    """
    if output.frame_probs is None or output.frame_probs.shape[1] == 0:
        return None
    if output.frame_stride is not None:
        return output.frame_stride * input_hop_seconds
    return input_hop_seconds * input_frames / output.frame_probs.shape[1]


def binary_cross_entropy(probs: Tensor, targets: Tensor) -> Tensor:
    """Cross entropy averaged over clips and classes (004 §2.1 loss), on probabilities.

    Probabilities are clamped to [EPS, 1 - EPS] so max-pooled outputs that saturate do
    not produce infinities. Computed in float32 (safe under AMP autocast).
    """
    probs = probs.float().clamp(EPS, 1 - EPS)
    return F.binary_cross_entropy(probs, targets.float())


class TaggingModel(nn.Module):
    """Base class of registered models.

    Subclasses call ``super().__init__()`` first; the constructor arguments are recorded
    automatically (via :func:`register_model`) as ``model_args`` so that
    ``serialize``/``from_pretrained`` can rebuild the model. Constructor arguments must
    therefore be JSON-serialisable (numbers, strings, bools, lists, dicts, None).
    """

    model_name: str = ""
    model_args: dict[str, Any]
    # Input frames per output segment (the product of the time poolings); see
    # TaggingOutput.frame_stride. Every model sets it.
    time_stride: int = 1

    def __init__(self) -> None:
        super().__init__()
        if not hasattr(self, "model_args"):
            self.model_args = {}

    def forward(self, features: Tensor) -> TaggingOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        """Training loss; the default is the clip-level cross entropy of 004 §2.1."""
        return binary_cross_entropy(output.clip_probs, targets)

    def recorded_args(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments to record as ``model_args`` (called after
        ``__init__``); a model whose arguments name files read at construction (GL-AT's
        exported global stream) drops them here, as the weights travel in the state dict."""
        return arguments

    def serialize(self) -> dict[str, Any]:
        """``{"model_name", "model_args", "state_dict"}`` with plain (unprefixed) keys."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return {"model_name": self.model_name, "model_args": dict(self.model_args), "state_dict": state}

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[TaggingModel]] = {}
# One module per paper; imported on first look-up so `import avtag.audio` stays light.
MODEL_MODULES = ("crnn", "multilevel", "sca", "mmnet", "glat", "cnn10", "resnet38")

M = TypeVar("M", bound=type[TaggingModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register ``cls`` under ``name`` and record its init args."""

    def deco(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        signature = inspect.signature(cls.__init__)
        original_init = cls.__init__

        def __init__(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop("self")
            # Record before the body runs; nested models record their own.
            object.__setattr__(self, "model_args", {})
            original_init(self, *args, **kwargs)
            self.model_args = self.recorded_args(arguments)

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__doc__ = original_init.__doc__
        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _import_model_modules() -> None:
    for module in MODEL_MODULES:
        qualified = f"avtag.audio.models.{module}"
        try:
            importlib.import_module(qualified)
        except ModuleNotFoundError as err:  # only tolerate the module file itself missing
            if err.name != qualified:
                raise


def available_models() -> list[str]:
    """Names accepted by :func:`get`."""
    _import_model_modules()
    return sorted(_REGISTRY)


def get(name: str) -> type[TaggingModel]:
    """The model class registered under ``name`` (asteroid-style look-up)."""
    if name not in _REGISTRY:
        _import_model_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None


def build_model(name: str, **model_args: Any) -> TaggingModel:
    """Instantiate a registered model."""
    return get(name)(**model_args)


def strip_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop DataParallel/DDP ``module.`` and Lightning ``model.`` prefixes from keys."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def from_pretrained(source: str | Path | dict[str, Any], map_location: str | torch.device = "cpu") -> TaggingModel:
    """Rebuild a model from a ``serialize()`` dict or a ``torch.save``-d file of one.

    Files are read with ``weights_only=True``: a checkpoint can never run code.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError("no such checkpoint file", path)
        try:
            package = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any load failure is a bad file
            raise CheckpointError(f"not a readable avtag checkpoint ({type(err).__name__})", path) from None
    else:
        path, package = None, source
    if not isinstance(package, dict) or not {"model_name", "model_args", "state_dict"} <= package.keys():
        raise CheckpointError("missing model_name/model_args/state_dict", path)
    model = build_model(package["model_name"], **package["model_args"])
    model.load_state_dict(strip_prefixes(package["state_dict"]))
    return model
