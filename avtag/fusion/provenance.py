"""Which models produced a fusion file's inputs: weights fingerprints and configurations as JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any


def weights_fingerprint(state_dict: dict[str, Any]) -> str:
    """SHA-256 over tensor names, dtypes, shapes and bytes (name order).

    The same weights exported or checkpointed hash alike (our documented choice).
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_audio_tagger(tagger: Any, path: str | Path | None = None) -> dict[str, Any]:
    """Provenance of an :class:`avtag.audio.tagger.AudioTagger`: model, weights hash, front-end, classes."""
    state = {f"model.{k}": v for k, v in tagger.model.state_dict().items()}
    state |= {f"frontend.{k}": v for k, v in tagger.frontend.state_dict().items()}
    frontend = getattr(tagger.frontend, "config", None)
    return {
        "model_name": tagger.model.model_name,
        "model_args": json.loads(json.dumps(tagger.model.model_args, default=str)),
        "weights_sha256": weights_fingerprint(state),
        "frontend": None if frontend is None else json.loads(json.dumps(frontend, default=str)),
        "classes": list(tagger.classes),
        "checkpoint": None if path is None else Path(path).name,
    }


def describe_video_config(config: Any) -> dict[str, Any]:
    """Provenance of a video branch configuration (a dataclass or a dict) as JSON."""
    if is_dataclass(config) and not isinstance(config, type):
        data = asdict(config)
    elif isinstance(config, dict):
        data = dict(config)
    else:
        data = {"repr": repr(config)}
    return json.loads(json.dumps(data, default=str))
