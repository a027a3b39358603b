"""AudioTagger: front-end + model + class list + thresholds, the unit that is exported,
loaded and run.

Export format (a directory, see :meth:`AudioTagger.export`)::

    OUT/model.safetensors   weights: "model.*" and "frontend.*" tensors, no pickles
    OUT/config.json         {"format": "avtag-audio/1", "model_name", "model_args",
                             "frontend": {...}, "classes": [...], "thresholds": [...],
                             "metadata": {...}}

Loading accepts such a directory, a Lightning training checkpoint (``*.ckpt``, read
with ``weights_only=True``; its ``"avtag"`` entry holds the same fields) or a
``torch.save``-d ``serialize()`` dict.

A model trained on precomputed features (``"frontend": null``, e.g.
``multilevel_embeddings`` on AudioSet embeddings) is no AudioTagger: :func:`read_checkpoint`
reads it, :func:`export_checkpoint` exports it (same files, ``"frontend": null``) and
``python -m avtag.evaluate --embeddings`` evaluates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avtag.audio.features import LogMelFrontEnd
from avtag.audio.models.base import TaggingModel, TaggingOutput, build_model, strip_prefixes
from avtag.errors import CheckpointError
from avtag.events import event_names

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
            output.frame_hop = self.frontend.hop_seconds * features.shape[1] / output.frame_probs.shape[1]
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
        """Write ``model.safetensors`` + ``config.json`` into ``out_dir``."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"frontend.{k}": v for k, v in self.frontend.state_dict().items()}
        return write_export(out_dir, self.config(), tensors)

    @classmethod
    def from_config(cls, config: dict[str, Any], state: dict[str, Tensor] | None = None) -> AudioTagger:
        model = build_model(config["model_name"], **config["model_args"])
        frontend = LogMelFrontEnd(**config["frontend"])
        tagger = cls(model, frontend, config.get("classes"), config.get("thresholds"), config.get("metadata"))
        if state is not None:
            state = strip_prefixes(state)
            model_state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
            frontend_state = {k[9:]: v for k, v in state.items() if k.startswith("frontend.")}
            model.load_state_dict(model_state)
            if frontend_state:
                frontend.load_state_dict(frontend_state)
        return tagger

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> AudioTagger:
        """Load an export directory, a Lightning ``.ckpt`` or a ``serialize()`` file."""
        config, state = read_checkpoint(path, map_location)
        if "frontend" not in config:
            raise CheckpointError("checkpoint has no front-end configuration", path)
        if config["frontend"] is None:
            raise CheckpointError(
                f"model {config['model_name']!r} takes precomputed embeddings, not waveforms: "
                "evaluate it with `avtag evaluate --embeddings STORE.h5`",
                path,
            )
        return cls.from_config(config, state)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The config (as in ``config.json``) and the ``model.*``/``frontend.*`` tensors of an
    export directory, a Lightning ``.ckpt`` or a ``serialize()`` file (``weights_only``)."""
    path = Path(path)
    if path.is_dir():
        config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"not an avtag export (needs {CONFIG_FILE} and {WEIGHTS_FILE})", path)
        try:
            config = json.loads(config_path.read_text())
            from safetensors.torch import load_file

            state = load_file(str(weights_path), device=str(map_location))
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"unreadable export ({type(err).__name__}: {err})", path) from None
        return config, state
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
    config = {k: v for k, v in package.items() if k not in ("state_dict", "frontend_state")}
    state = {f"model.{k}": v for k, v in package["state_dict"].items()}
    state |= {f"frontend.{k}": v for k, v in package.get("frontend_state", {}).items()}
    return config, state


def export_checkpoint(source: str | Path, out_dir: str | Path) -> tuple[TaggingModel, dict[str, Any]]:
    """Export any loadable checkpoint as ``model.safetensors`` + ``config.json``; returns the
    rebuilt model and the written config. Feature-input models (``"frontend": null``)
    are rebuilt with :func:`avtag.audio.models.base.from_pretrained` and keep
    ``"frontend": null``."""
    config, state = read_checkpoint(source)
    if config.get("frontend", {}) is not None:
        tagger = AudioTagger.from_pretrained(source)
        tagger.export(out_dir)
        return tagger.model, tagger.config()
    from avtag.audio.models.base import from_pretrained

    model_state = {k[6:]: v for k, v in strip_prefixes(state).items() if k.startswith("model.")}
    try:
        model = from_pretrained({"model_name": config["model_name"], "model_args": config["model_args"], "state_dict": model_state})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot rebuild the model ({type(err).__name__}: {err})", source) from None
    config = {
        "format": EXPORT_FORMAT,
        "model_name": model.model_name,
        "model_args": model.model_args,
        "frontend": None,
        "classes": list(config.get("classes") or []),
        "thresholds": [float(t) for t in config.get("thresholds") or []],
        "metadata": dict(config.get("metadata") or {}),
    }
    write_export(out_dir, config, {f"model.{k}": v for k, v in model.state_dict().items()})
    return model, config


def write_export(out_dir: str | Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    """Write ``tensors`` to ``model.safetensors`` and ``config`` to ``config.json`` in ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def _to_cpu(out: TaggingOutput) -> TaggingOutput:
    def move(x: Any) -> Any:
        return x.detach().cpu() if isinstance(x, Tensor) else x

    return TaggingOutput(
        clip_probs=move(out.clip_probs),
        frame_probs=move(out.frame_probs),
        attention={k: move(v) for k, v in out.attention.items()},
        extras={k: move(v) for k, v in out.extras.items()},
        frame_hop=out.frame_hop,
    )
