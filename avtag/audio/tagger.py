"""AudioTagger: front-end + model + class list + thresholds, the unit that is exported,
loaded and run.

Export format (a directory, see :meth:`AudioTagger.export`)::

    OUT/model.safetensors   weights: "model.*" and "frontend.*" tensors, no pickles
    OUT/config.json         {"format": "avtag-audio/1", "model_name", "model_args",
                             "frontend": {...}, "classes": [...], "thresholds": [...],
                             "metadata": {...}, "weights_sha256": "<hex>"}

``weights_sha256`` is the SHA-256 of ``model.safetensors``: loading refuses weights that do
not match it (a bit flip gives garbage outputs, never a silent load). Every field of a
config is type-checked and every number must be finite (:func:`check_config`); a class
list whose length is not the model's output size is refused, on export and on load. Any
such problem is one :class:`~avtag.errors.CheckpointError` line naming the file.

Loading accepts such a directory, a Lightning training checkpoint (``*.ckpt``, read
with ``weights_only=True``; its ``"avtag"`` entry holds the same fields) or a
``torch.save``-d ``serialize()`` dict.

A model trained on precomputed features (``"frontend": null``, e.g.
``multilevel_embeddings`` on AudioSet embeddings) is no AudioTagger: :func:`read_checkpoint`
reads it, :func:`export_checkpoint` exports it (same files, ``"frontend": null``) and
``python -m avtag.evaluate --embeddings`` evaluates it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avtag.audio.features import LogMelFrontEnd
from avtag.audio.models.base import TaggingModel, TaggingOutput, build_model, segment_hop_seconds, strip_prefixes
from avtag.atomic import check_writable, write_bytes, write_json
from avtag.errors import CheckpointError
from avtag.events import event_names
from avtag.validate import read_json

EXPORT_FORMAT = "avtag-audio/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class AudioTagger(nn.Module):
    """Waveform in, :class:`TaggingOutput` (with ``frame_hop`` set) out."""

    def __init__(
        self,
        model: TaggingModel,
        frontend: LogMelFrontEnd,
        classes: list[str] | None = None,
        thresholds: list[float] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.frontend = frontend
        self.classes = list(classes) if classes is not None else event_names()
        self.thresholds = list(thresholds) if thresholds is not None else [0.5] * len(self.classes)
        self.metadata = dict(metadata or {})
        if len(self.thresholds) != len(self.classes):
            raise ValueError("one threshold per class is required")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, waveform: Tensor) -> TaggingOutput:
        """``waveform``: (batch, samples) mono at ``frontend.sample_rate``."""
        features = self.frontend(waveform)
        output = self.model(features)
        if output.frame_probs is not None and output.frame_probs.shape[1] > 0:
            output.frame_hop = segment_hop_seconds(output, self.frontend.hop_seconds, features.shape[1])
        return output

    @torch.inference_mode()
    def predict(self, waveform: np.ndarray | Tensor, sample_rate: int) -> TaggingOutput:
        """Tag one clip of any length/rate/channel layout (padded or cropped to the
        front-end's clip length). Returns batch-1 tensors on the CPU."""
        was_training = self.training
        self.eval()
        try:
            prepared = self.frontend.prepare(waveform, sample_rate).to(self.device)
            out = self(prepared.unsqueeze(0))
        finally:
            self.train(was_training)
        return _to_cpu(out)

    def decide(self, clip_probs: Tensor | np.ndarray) -> np.ndarray:
        """Binary decisions with the class-specific thresholds."""
        probs = clip_probs.detach().cpu().numpy() if isinstance(clip_probs, Tensor) else np.asarray(clip_probs)
        return probs >= np.asarray(self.thresholds, dtype=probs.dtype)

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        return {
            "format": EXPORT_FORMAT,
            "model_name": self.model.model_name,
            "model_args": self.model.model_args,
            "frontend": self.frontend.config,
            "classes": self.classes,
            "thresholds": [float(t) for t in self.thresholds],
            "metadata": self.metadata,
        }

    def export(self, out_dir: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` (refused when the
        class list does not fit the model's outputs, or a threshold is missing)."""
        check_output_size(self.model, self.classes, out_dir)
        if len(self.thresholds) != len(self.classes):
            raise CheckpointError(f"{len(self.thresholds)} thresholds for {len(self.classes)} classes", out_dir)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"frontend.{k}": v for k, v in self.frontend.state_dict().items()}
        return write_export(out_dir, self.config(), tensors)

    @classmethod
    def from_config(cls, config: dict[str, Any], state: dict[str, Tensor] | None = None,
                    source: str | Path | None = None) -> AudioTagger:
        """Rebuild from a checked config (:func:`check_config`); any failure is one
        :class:`CheckpointError` line naming ``source``."""
        config = check_config(config, source)
        if config["frontend"] is None:
            raise CheckpointError("this model takes precomputed features, not waveforms (frontend: null)", source)
        try:
            model = build_model(config["model_name"], **config["model_args"])
            frontend = LogMelFrontEnd(**config["frontend"])
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - any bad value in a file is the file's problem
            raise CheckpointError(f"cannot rebuild the model/front-end ({type(err).__name__}: {err})", source) from None
        check_output_size(model, config["classes"], source)
        tagger = cls(model, frontend, config["classes"], config["thresholds"], config["metadata"])
        if state is not None:
            state = strip_prefixes(state)
            model_state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
            frontend_state = {k[9:]: v for k, v in state.items() if k.startswith("frontend.")}
            try:
                model.load_state_dict(model_state)
                if frontend_state:
                    frontend.load_state_dict(frontend_state)
            except (RuntimeError, KeyError, TypeError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise CheckpointError(f"weights do not fit the configured model ({first})", source) from None
            for name, tensor in list(model.state_dict().items()) + list(frontend.state_dict().items()):
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise CheckpointError(f"weights hold non-finite values ({name})", source)
        return tagger

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> AudioTagger:
        """Load an export directory, a Lightning ``.ckpt`` or a ``serialize()`` file."""
        config, state = read_checkpoint(path, map_location)
        if config.get("frontend", "missing") is None:
            raise CheckpointError(
                f"model {config['model_name']!r} takes precomputed embeddings, not waveforms: "
                "evaluate it with `avtag evaluate --embeddings STORE.h5`",
                path,
            )
        return cls.from_config(config, state, source=path)


# ----------------------------------------------------------------------------- checks

_FRONTEND_INTS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels")
_FRONTEND_FLOATS = ("f_min", "f_max", "power", "log_offset", "clip_seconds")


def _finite_json(value: Any) -> bool:
    """Whether every number inside ``value`` is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_json(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_json(v) for v in value)
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(config: Any, source: str | Path | None = None) -> dict[str, Any]:
    """``config`` (an export's ``config.json`` or a checkpoint's ``"avtag"`` entry) with every
    field of the expected type and every number finite; else one :class:`CheckpointError`."""

    def bad(message: str) -> CheckpointError:
        return CheckpointError(f"bad model configuration: {message}", source)

    if not isinstance(config, dict):
        raise bad("expected a JSON object")
    missing = [k for k in ("model_name", "model_args", "frontend") if k not in config]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    if not isinstance(config["model_name"], str):
        raise bad("model_name must be a string")
    if not isinstance(config["model_args"], dict):
        raise bad("model_args must be an object")
    if not _finite_json(config):
        raise bad("holds a non-finite number (NaN or infinity)")
    frontend = config["frontend"]
    if frontend is not None:
        if not isinstance(frontend, dict):
            raise bad("frontend must be an object or null")
        for key in _FRONTEND_INTS:
            if key in frontend and (not isinstance(frontend[key], int) or isinstance(frontend[key], bool) or frontend[key] <= 0):
                raise bad(f"frontend.{key} must be a positive integer, got {frontend[key]!r}")
        for key in _FRONTEND_FLOATS:
            if key in frontend and frontend[key] is not None and not _is_number(frontend[key]):
                raise bad(f"frontend.{key} must be a number, got {frontend[key]!r}")
    classes = config.get("classes")
    if classes is None:
        classes = event_names()
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise bad("classes must be a non-empty list of names")
    if len(set(classes)) != len(classes):
        raise bad("classes repeat a name")
    thresholds = config.get("thresholds")
    if thresholds is None:
        thresholds = [0.5] * len(classes)
    if not isinstance(thresholds, list) or not all(_is_number(t) for t in thresholds):
        raise bad("thresholds must be a list of numbers")
    if len(thresholds) != len(classes):
        raise bad(f"{len(thresholds)} thresholds for {len(classes)} classes")
    if not all(0.0 <= t <= 1.0 for t in thresholds):
        raise bad("thresholds must lie in [0, 1]")
    metadata = config.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad("metadata must be an object")
    return config | {"classes": list(classes), "thresholds": [float(t) for t in thresholds], "metadata": metadata}


def check_output_size(model: TaggingModel, classes: list[str], source: str | Path | None = None) -> None:
    """Refuse a class list whose length is not the model's number of outputs."""
    outputs = model.model_args.get("num_classes")
    if isinstance(outputs, int) and outputs != len(classes):
        raise CheckpointError(f"{len(classes)} class names for a model with {outputs} outputs", source)


def weights_digest(data: bytes) -> str:
    """The ``weights_sha256`` of an export: SHA-256 of the safetensors file's bytes."""
    return hashlib.sha256(data).hexdigest()


def _read_export(path: Path, map_location: str | torch.device) -> tuple[dict[str, Any], dict[str, Tensor]]:
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"not an avtag export (needs {CONFIG_FILE} and {WEIGHTS_FILE})", path)
    config = read_json(config_path, "an avtag export config.json", CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError("not an avtag export config (expected a JSON object)", config_path)
    try:
        data = weights_path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read: {err.strerror or err}", weights_path) from None
    expected = config.get("weights_sha256")
    if not isinstance(expected, str):
        raise CheckpointError("config.json has no weights_sha256 (an export from an older avtag: export the .ckpt again)",
                              config_path)
    if weights_digest(data) != expected:
        raise CheckpointError("weights do not match the weights_sha256 of config.json (a corrupted or altered file)",
                              weights_path)
    try:
        from safetensors.torch import load

        state = {k: v.to(map_location) for k, v in load(data).items()}
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"unreadable safetensors file ({type(err).__name__})", weights_path) from None
    return config, state


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The config (as in ``config.json``) and the ``model.*``/``frontend.*`` tensors of an
    export directory, a Lightning ``.ckpt`` or a ``serialize()`` file (``weights_only``)."""
    path = Path(path)
    if path.is_dir():
        return _read_export(path, map_location)
    if not path.is_file():
        raise CheckpointError("no such checkpoint", path)
    try:
        package = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"not a readable checkpoint ({type(err).__name__})", path) from None
    if isinstance(package, dict) and "avtag" in package:  # Lightning checkpoint
        package = package["avtag"]
    if not isinstance(package, dict) or "model_name" not in package:
        raise CheckpointError("not an avtag checkpoint (no model_name)", path)
    weights, frontend_weights = package.get("state_dict"), package.get("frontend_state", {})
    if not isinstance(weights, dict) or not isinstance(frontend_weights, dict) or not all(
        isinstance(v, Tensor) for v in [*weights.values(), *frontend_weights.values()]
    ):
        raise CheckpointError("checkpoint weights are not a dict of tensors", path)
    config = {k: v for k, v in package.items() if k not in ("state_dict", "frontend_state")}
    state = {f"model.{k}": v for k, v in weights.items()}
    state |= {f"frontend.{k}": v for k, v in frontend_weights.items()}
    return config, state


def export_checkpoint(source: str | Path, out_dir: str | Path) -> tuple[TaggingModel, dict[str, Any]]:
    """Export any loadable checkpoint as ``model.safetensors`` + ``config.json``; returns the
    rebuilt model and the written config. Feature-input models (``"frontend": null``)
    are rebuilt with :func:`avtag.audio.models.base.from_pretrained` and keep
    ``"frontend": null``."""
    config, state = read_checkpoint(source)
    config = check_config(config, source)
    if config["frontend"] is not None:
        tagger = AudioTagger.from_config(config, state, source=source)
        check_writable(Path(out_dir) / CONFIG_FILE)
        tagger.export(out_dir)
        return tagger.model, tagger.config()
    from avtag.audio.models.base import from_pretrained

    model_state = {k[6:]: v for k, v in strip_prefixes(state).items() if k.startswith("model.")}
    try:
        model = from_pretrained({"model_name": config["model_name"], "model_args": config["model_args"], "state_dict": model_state})
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"cannot rebuild the model ({type(err).__name__}: {err})", source) from None
    check_output_size(model, config["classes"], source)
    config = {
        "format": EXPORT_FORMAT,
        "model_name": model.model_name,
        "model_args": model.model_args,
        "frontend": None,
        "classes": config["classes"],
        "thresholds": config["thresholds"],
        "metadata": config["metadata"],
    }
    check_writable(Path(out_dir) / CONFIG_FILE)
    write_export(out_dir, config, {f"model.{k}": v for k, v in model.state_dict().items()})
    return model, config


def write_export(out_dir: str | Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    """Write ``tensors`` to ``model.safetensors`` and ``config`` (with the weights'
    ``weights_sha256``) to ``config.json`` in ``out_dir``, each atomically."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    write_bytes(out / WEIGHTS_FILE, data)
    write_json(out / CONFIG_FILE, _plain_json(config) | {"weights_sha256": weights_digest(data)})
    return out


def _plain_json(value: Any) -> Any:
    """Tuples as lists, so the written config reads back equal."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    return value


def _to_cpu(out: TaggingOutput) -> TaggingOutput:
    def move(x: Any) -> Any:
        return x.detach().cpu() if isinstance(x, Tensor) else x

    return TaggingOutput(
        clip_probs=move(out.clip_probs),
        frame_probs=move(out.frame_probs),
        attention={k: move(v) for k, v in out.attention.items()},
        extras={k: move(v) for k, v in out.extras.items()},
        frame_hop=out.frame_hop,
        frame_stride=out.frame_stride,
    )
