"""Evaluation of a model trained on precomputed features (``frontend: null``, e.g.
``multilevel_embeddings`` on AudioSet embeddings): it is no :class:`AudioTagger`, so it is
rebuilt with :func:`avtag.audio.models.base.from_pretrained` from the checkpoint's
``"avtag"`` entry (or an export's ``config.json``) and run over an embedding store
(:mod:`avtag.data.embeddings`). The outputs are those of :mod:`avtag.evaluate`.

Choices where the paper is silent: an embedding store's ground truth is its label matrix
(the columns of the model's classes); a threshold-tuning store must share no clip id with
the evaluated one; predictions.csv gives each clip 0 and the store's clip length (10 s for
AudioSet) as start/end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from avtag.audio.models.base import TaggingModel, from_pretrained
from avtag.audio.tagger import check_config, check_output_size, read_checkpoint
from avtag.data.embeddings import AUDIOSET_SEGMENT_SECONDS, EmbeddingDataset
from avtag.device import resolve_device
from avtag.errors import CheckpointError, InputFileError
from avtag.evaluate_outputs import write_outputs
from avtag.threshold_sources import SAVED, thresholds_from_source


@dataclass
class FeatureModel:
    """A model trained on precomputed features (``frontend: null``) with its class list,
    the thresholds tuned on validation in training, and metadata."""

    model: TaggingModel
    classes: list[str]
    thresholds: list[float]
    metadata: dict[str, Any]

    @property
    def hop_seconds(self) -> float:
        return float(self.metadata.get("feature_hop_seconds", AUDIOSET_SEGMENT_SECONDS))


def load_feature_model(path: str | Path, map_location: str | torch.device = "cpu") -> FeatureModel:
    """The model + thresholds of a feature-input checkpoint or export (its ``"avtag"``
    entry / ``config.json``), rebuilt with :func:`avtag.audio.models.base.from_pretrained`."""
    config, state = read_checkpoint(path, map_location)
    config = check_config(config, path)
    if config["frontend"] is not None:
        raise CheckpointError("this model takes waveforms (it has a front-end): evaluate it with --manifest", path)
    model_state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model = from_pretrained({"model_name": config["model_name"], "model_args": config["model_args"], "state_dict": model_state})
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any bad value in a file is the file's problem
        raise CheckpointError(f"cannot rebuild the model ({type(err).__name__}: {err})", path) from None
    classes, thresholds = config["classes"], config["thresholds"]
    check_output_size(model, classes, path)
    return FeatureModel(model, classes, thresholds, config["metadata"])


@torch.inference_mode()
def run_feature_model(
    loaded: FeatureModel, dataset: EmbeddingDataset, batch_size: int = 256, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Clip probabilities ``(N, C)``, frame probabilities ``(N, T', C)`` (or None) and the
    frame hop of every clip of ``dataset``, in store order."""
    model = loaded.model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    clip_chunks, frame_chunks, frame_hop = [], [], None
    for batch in loader:
        features = batch["features"].to(device)
        output = model(features)
        clip_chunks.append(output.clip_probs.float().cpu().numpy())
        if output.frame_probs is not None and output.frame_probs.shape[1] > 0:
            frame_chunks.append(output.frame_probs.float().cpu().numpy())
            frame_hop = loaded.hop_seconds * features.shape[1] / output.frame_probs.shape[1]
    clip_probs = np.concatenate(clip_chunks).astype(np.float64)
    frame_probs = np.concatenate(frame_chunks).astype(np.float64) if len(frame_chunks) == len(clip_chunks) else None
    return clip_probs, frame_probs, frame_hop


def load_feature_thresholds(
    source: str, loaded: FeatureModel, store: EmbeddingDataset, class_labels: str | Path | None, batch_size: int, num_workers: int
) -> tuple[np.ndarray, str]:
    """Thresholds from ``source``: "saved", a thresholds JSON, or a validation embedding
    store (no clip in common with ``store``) to tune them on."""

    def validation_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
        if path.resolve() == store.store.path.resolve():
            raise InputFileError("refusing to tune thresholds on the store being evaluated", path)
        validation = EmbeddingDataset(path, loaded.classes, class_labels)
        if validation.store.has_ids and store.store.has_ids:
            shared = set(validation.store.ids()) & set(store.store.ids())
            if shared:
                raise InputFileError(
                    f"{len(shared)} clip(s) of the threshold-tuning store are also evaluated (first: {sorted(shared)[0]});"
                    " thresholds must come from a disjoint validation set",
                    path,
                )
        probs, _, _ = run_feature_model(loaded, validation, batch_size, num_workers)
        return validation.targets, probs

    return thresholds_from_source(source, loaded.classes, loaded.thresholds, "validation embedding store", validation_scores)


def evaluate_embeddings(
    checkpoint: str | Path,
    store: str | Path,
    out_dir: str | Path,
    class_labels: str | Path | None = None,
    thresholds_from: str = SAVED,
    batch_size: int = 256,
    device: str = "auto",
    num_workers: int = 0,
) -> dict[str, Any]:
    """Run a feature-input model (``frontend: null``) over an embedding store (see
    :mod:`avtag.data.embeddings`; ``class_labels`` names its label columns), write the
    outputs listed in the module docstring into ``out_dir`` and return the metrics."""
    from avtag.data.dcase17 import parse_clip_id

    loaded = load_feature_model(checkpoint)
    loaded.model.to(resolve_device(device))
    dataset = EmbeddingDataset(store, loaded.classes, class_labels)
    expected = getattr(loaded.model, "embedding_dim", None)
    if expected is not None and dataset.store.shape[2] != expected:
        raise InputFileError(f"store embeddings have {dataset.store.shape[2]} dimensions, the model takes {expected}", store)
    thresholds, threshold_source = load_feature_thresholds(
        thresholds_from, loaded, dataset, class_labels, batch_size, num_workers
    )
    clip_probs, _, _ = run_feature_model(loaded, dataset, batch_size, num_workers)
    ids = dataset.store.ids()
    if len(set(ids)) != len(ids):
        raise InputFileError("video_id_list repeats clip ids", store)
    targets = dataset.targets
    classes = loaded.classes
    return write_outputs(
        out_dir,
        {"checkpoint": str(checkpoint), "embeddings": str(store)},
        ids=ids,
        truth={rid: [classes[c] for c in np.flatnonzero(row)] for rid, row in zip(ids, targets, strict=True)},
        targets=targets,
        clip_probs=clip_probs,
        classes=classes,
        thresholds=thresholds,
        threshold_source=threshold_source,
        times={rid: (0.0, dataset.store.clip_seconds) for rid in ids if parse_clip_id(rid) is None},
    )


__all__ = ["FeatureModel", "evaluate_embeddings", "load_feature_model", "load_feature_thresholds", "run_feature_model"]
