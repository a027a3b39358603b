"""Evaluate a trained tagger on a manifest: predictions, probabilities, metrics, a table.

``python -m avtag.evaluate --checkpoint CKPT_OR_EXPORT --manifest M.jsonl --out DIR``

or, for a model trained on precomputed features (``frontend: null``, e.g.
``multilevel_embeddings``; it is no :class:`AudioTagger`, so it is rebuilt with
:func:`avtag.audio.models.base.from_pretrained` from the checkpoint's ``"avtag"`` entry),

``python -m avtag.evaluate --checkpoint CKPT --embeddings EVAL.h5 --class-labels class_labels_indices.csv --out DIR``

writes into ``DIR``:

* ``predictions.csv``: the decisions in the official DCASE 2017 Task 4 format
  (``file<TAB>start<TAB>end<TAB>label``, :func:`avtag.metrics.write_tag_file`), ready for the
  organisers' scorer;
* ``probabilities.csv``: the clip probability matrix, header ``id`` + class names;
* ``thresholds.json``: the class thresholds used and where they came from;
* ``metrics.json``: micro precision/recall/F1 and per-class counts and scores (subtask A,
  :func:`avtag.metrics.score_tagging`), mAP, mean AUC, d-prime
  (:func:`avtag.metrics.ranking_scores`) and, when records carry strong labels (``events``)
  and the model has frame outputs, the segment-based localisation F1
  (:func:`avtag.metrics.segment_based_f1`);
* ``per_class.md``: a per-class table (also printed);
* ``failures.csv``: clips that could not be decoded, with the reason. A bad file costs
  that clip only: it gets no tag (its labels count as misses) and is left out of the
  ranking and localisation scores; everything else is still computed and written.

Thresholds are never tuned on the evaluated manifest (004 §3.3: "the thresholds obtained on
the validation data were directly applied to the test and evaluation data"). By default
they are those saved with the model (tuned on validation during training);
``--thresholds-from`` takes a ``thresholds.json`` or a separate validation manifest to tune
on, which must share no clip with the evaluated one.

Choices where the paper is silent:
- Clips with strong labels define the localisation ground truth for every clip of the
  manifest: a clip without ``events`` counts as having no audible event.
- A clip's start/end in ``predictions.csv`` come from its id when it is a DCASE clip name,
  else from the record's ``start``/``end`` (default 0 and its duration); for an
  embedding store, 0 and the store's clip length (10 s for AudioSet).
- An embedding store's ground truth is its label matrix (the columns of the model's
  classes); a threshold-tuning store must share no clip id with the evaluated one.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from avtag.audio.models.base import TaggingModel, from_pretrained
from avtag.audio.tagger import AudioTagger, read_checkpoint
from avtag.data.datasets import ClipDataset
from avtag.data.embeddings import AUDIOSET_SEGMENT_SECONDS, EmbeddingDataset
from avtag.data.manifests import read_manifest
from avtag.errors import AvtagError, CheckpointError, InputFileError, ManifestError, cli_guard

SAVED = "saved"


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def run_tagger(
    tagger: AudioTagger, dataset: ClipDataset, batch_size: int = 16, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray | None, float | None, dict[int, str]]:
    """Clip probabilities ``(N, C)``, frame probabilities ``(N, T', C)`` (or None), the
    frame hop of every clip of ``dataset`` in manifest order, and the clips that could not
    be decoded (index -> one-line reason; their rows hold NaN) when the dataset reports
    errors instead of raising them."""
    tagger.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    clip_chunks, frame_chunks, frame_hop = [], [], None
    failures: dict[int, str] = {}
    for batch in loader:
        failures |= {int(i): e for i, e in zip(batch["index"], batch["error"], strict=True) if e}
        output = tagger(batch["waveform"].to(tagger.device))
        clip_chunks.append(output.clip_probs.float().cpu().numpy())
        if output.frame_probs is not None:
            frame_chunks.append(output.frame_probs.float().cpu().numpy())
            frame_hop = output.frame_hop
    clip_probs = np.concatenate(clip_chunks).astype(np.float64)
    frame_probs = np.concatenate(frame_chunks).astype(np.float64) if len(frame_chunks) == len(clip_chunks) else None
    failed = sorted(failures)
    clip_probs[failed] = np.nan
    if frame_probs is not None:
        frame_probs[failed] = np.nan
    return clip_probs, frame_probs, frame_hop, failures


def load_thresholds(
    source: str, tagger: AudioTagger, manifest: Path, batch_size: int, num_workers: int
) -> tuple[np.ndarray, str]:
    """Thresholds from ``source`` ("saved", a thresholds JSON, or a validation manifest to
    tune on) and a description of where they came from."""
    if source == SAVED:
        return np.asarray(tagger.thresholds, dtype=np.float64), "saved with the model (tuned on validation in training)"
    path = Path(source)
    if not path.is_file():
        raise InputFileError("no such thresholds file or validation manifest", path)
    if path.suffix == ".json":
        return _thresholds_json(path, tagger.classes), f"file {path}"
    if path.resolve() == manifest.resolve():
        raise ManifestError("refusing to tune thresholds on the manifest being evaluated", path)
    evaluated_ids = {record.id for record in read_manifest(manifest)}
    shared = [record.id for record in read_manifest(path) if record.id in evaluated_ids]
    if shared:
        raise ManifestError(
            f"{len(shared)} clip(s) of the threshold-tuning manifest are also evaluated (first: {shared[0]});"
            " thresholds must come from a disjoint validation set",
            path,
        )
    from avtag.thresholds import tune_thresholds

    validation = ClipDataset(path, frontend=tagger.frontend, classes=tagger.classes, on_error="report")
    probs, _, _, failures = run_tagger(tagger, validation, batch_size, num_workers)
    decoded = np.setdiff1d(np.arange(len(probs)), list(failures))
    tuned = tune_thresholds(validation.targets[decoded] > 0.5, probs[decoded])
    return np.asarray(tuned.thresholds, dtype=np.float64), f"tuned on {path} (004 section 3.3)"


def _thresholds_json(path: Path, classes: list[str]) -> np.ndarray:
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "thresholds" in data:
            names = data.get("classes", classes)
            values = dict(zip(names, data["thresholds"], strict=True))
        else:
            values = dict(data)
        return np.asarray([float(values[name]) for name in classes], dtype=np.float64)
    except (ValueError, TypeError, KeyError) as err:
        raise InputFileError(f"not a thresholds file for this model's {len(classes)} classes ({err})", path) from None


def evaluate(
    checkpoint: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    thresholds_from: str = SAVED,
    batch_size: int = 16,
    device: str = "auto",
    num_workers: int = 0,
) -> dict[str, Any]:
    """Run the tagger over ``manifest``, write the outputs listed in the module docstring
    into ``out_dir`` and return the metrics."""
    from avtag.metrics import segment_based_f1

    manifest = Path(manifest)
    tagger = AudioTagger.from_pretrained(checkpoint).to(resolve_device(device))
    classes = tagger.classes
    dataset = ClipDataset(manifest, frontend=tagger.frontend, classes=classes, on_error="report")
    thresholds, threshold_source = load_thresholds(thresholds_from, tagger, manifest, batch_size, num_workers)
    clip_probs, frame_probs, frame_hop, failures = run_tagger(tagger, dataset, batch_size, num_workers)
    records = dataset.records
    decoded = [i for i in range(len(records)) if i not in failures]
    clip_seconds = dataset.clip_seconds or 0.0
    times = {
        r.id: (r.start or 0.0, r.end if r.end is not None else (r.start or 0.0) + (r.duration or clip_seconds))
        for r in records
    }
    localisation = None
    if frame_probs is not None and frame_hop is not None and any(record.events for record in records):
        segments = segment_based_f1(
            [frame_probs[i] for i in decoded],
            frame_hop,
            thresholds,
            [records[i].events for i in decoded],
            classes,
            clip_durations=[records[i].duration or clip_seconds for i in decoded],
        )
        localisation = {
            "segment_f1": segments.f1,
            "segment_precision": segments.precision,
            "segment_recall": segments.recall,
            "segment_length": 1.0,
        }
    return write_outputs(
        out_dir,
        {"checkpoint": str(checkpoint), "manifest": str(manifest)},
        ids=[record.id for record in records],
        truth={record.id: [label for label in record.labels] for record in records},
        targets=dataset.targets > 0.5,
        clip_probs=clip_probs,
        classes=classes,
        thresholds=thresholds,
        threshold_source=threshold_source,
        times=times,
        localisation=localisation,
        failures={records[i].id: reason for i, reason in failures.items()},
    )


def write_outputs(
    out_dir: str | Path,
    header: dict[str, Any],
    ids: list[str],
    truth: dict[str, list[str]],
    targets: np.ndarray,
    clip_probs: np.ndarray,
    classes: list[str],
    thresholds: np.ndarray,
    threshold_source: str,
    times: dict[str, tuple[float, float]],
    localisation: dict[str, float] | None = None,
    failures: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Decide with ``thresholds``, score, and write every output file of the module
    docstring into ``out_dir``; returns the metrics (``header`` first).

    ``failures`` (clip id -> reason) are clips that could not be decoded: they are listed
    in ``failures.csv``, get no tag (so their labels count as misses in the tagging
    scores) and are left out of the ranking scores (their probabilities are NaN)."""
    from avtag.metrics import ranking_scores, score_tagging, write_tag_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    decisions = clip_probs >= thresholds
    predicted = {rid: [classes[c] for c in np.flatnonzero(row)] for rid, row in zip(ids, decisions, strict=True)}
    write_tag_file(out / "predictions.csv", predicted, times)
    _write_probabilities(out / "probabilities.csv", ids, classes, clip_probs)
    (out / "thresholds.json").write_text(
        json.dumps({"classes": classes, "thresholds": thresholds.tolist(), "source": threshold_source}, indent=2) + "\n"
    )

    if failures is not None:  # decoded inputs: always say which failed, even none
        with (out / "failures.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["clip_id", "reason"])
            writer.writerows(sorted(failures.items()))
    failures = failures or {}
    decoded = np.array([rid not in failures for rid in ids], dtype=bool)
    tagging = score_tagging(truth, predicted, classes=classes)
    ranking = ranking_scores(targets[decoded], clip_probs[decoded], classes)
    metrics: dict[str, Any] = header | {
        "clips": len(ids),
        "failed_clips": len(failures),
        "thresholds": threshold_source,
        "micro": {"precision": tagging.precision, "recall": tagging.recall, "f1": tagging.f1},
        "macro_f1": tagging.macro_f1(),
        "mAP": ranking.mean_average_precision,
        "mAUC": ranking.mean_auc,
        "d_prime": ranking.mean_d_prime,
        "per_class": {
            name: {
                "threshold": float(thresholds[c]),
                "tp": tagging.class_wise[name].tp,
                "fp": tagging.class_wise[name].fp,
                "fn": tagging.class_wise[name].fn,
                "precision": tagging.class_wise[name].precision,
                "recall": tagging.class_wise[name].recall,
                "f1": tagging.class_wise[name].f1,
                "average_precision": ranking.average_precision[name],
                "auc": ranking.auc[name],
                "d_prime": ranking.d_prime[name],
            }
            for c, name in enumerate(classes)
        },
        "ranking_skipped_classes": ranking.skipped,
    }
    if localisation is not None:
        metrics["localisation"] = localisation
    (out / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2) + "\n")
    table = per_class_table(metrics, classes)
    (out / "per_class.md").write_text(table)
    return metrics


# ----------------------------------------------------------------------------- embeddings


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
    if config.get("frontend", {}) is not None:
        raise CheckpointError("this model takes waveforms (it has a front-end): evaluate it with --manifest", path)
    model_state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model = from_pretrained({"model_name": config["model_name"], "model_args": config["model_args"], "state_dict": model_state})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot rebuild the model ({type(err).__name__}: {err})", path) from None
    classes = list(config.get("classes") or [])
    thresholds = [float(t) for t in config.get("thresholds") or [0.5] * len(classes)]
    if not classes or len(thresholds) != len(classes):
        raise CheckpointError(f"needs a class list and one threshold per class (got {len(classes)} and {len(thresholds)})", path)
    return FeatureModel(model, classes, thresholds, dict(config.get("metadata") or {}))


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
    if source == SAVED:
        return np.asarray(loaded.thresholds, dtype=np.float64), "saved with the model (tuned on validation in training)"
    path = Path(source)
    if not path.is_file():
        raise InputFileError("no such thresholds file or validation embedding store", path)
    if path.suffix == ".json":
        return _thresholds_json(path, loaded.classes), f"file {path}"
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
    from avtag.thresholds import tune_thresholds

    probs, _, _ = run_feature_model(loaded, validation, batch_size, num_workers)
    tuned = tune_thresholds(validation.targets, probs)
    return np.asarray(tuned.thresholds, dtype=np.float64), f"tuned on {path} (004 section 3.3)"


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


def _write_probabilities(path: Path, ids: list[str], classes: list[str], probs: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", *classes])
        for rid, row in zip(ids, probs, strict=True):
            writer.writerow([rid, *(f"{p:.6g}" for p in row)])


def _finite(value: Any) -> Any:
    """NaN -> None so that metrics.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def per_class_table(metrics: dict[str, Any], classes: list[str]) -> str:
    """Markdown table of the per-class scores, with a micro/mean row."""

    def fmt(x: float | None) -> str:
        return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"

    lines = [
        "| class | thr | P | R | F1 | TP | FP | FN | AP | AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in classes:
        s = metrics["per_class"][name]
        lines.append(
            f"| {name} | {fmt(s['threshold'])} | {fmt(s['precision'])} | {fmt(s['recall'])} | {fmt(s['f1'])} "
            f"| {s['tp']} | {s['fp']} | {s['fn']} | {fmt(s['average_precision'])} | {fmt(s['auc'])} |"
        )
    micro = metrics["micro"]
    lines.append(
        f"| **micro / mean** | | {fmt(micro['precision'])} | {fmt(micro['recall'])} | {fmt(micro['f1'])} "
        f"| | | | {fmt(metrics['mAP'])} | {fmt(metrics['mAUC'])} |"
    )
    if "localisation" in metrics:
        lines.append("")
        lines.append(f"Segment-based localisation F1 (1 s): {fmt(metrics['localisation']['segment_f1'])}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m avtag.evaluate", description="Evaluate a trained audio tagger on a manifest."
    )
    parser.add_argument("--checkpoint", required=True, help="Lightning .ckpt or export directory")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--manifest", help="JSONL manifest of the clips to evaluate (waveform models)")
    inputs.add_argument(
        "--embeddings", help="HDF5 embedding store to evaluate (models trained on precomputed features, frontend: null)"
    )
    parser.add_argument(
        "--class-labels",
        help="class_labels_indices.csv naming the label columns of the --embeddings store(s)",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--thresholds-from",
        default=SAVED,
        help="'saved' (default: thresholds saved with the model), a thresholds.json, "
        "or a separate validation manifest (validation embedding store with --embeddings) to tune them on",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 clips, 256 with --embeddings")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    return parser


@cli_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        raise AvtagError(f"bad --device {args.device!r} ({err})") from None
    if args.embeddings is not None:
        metrics = evaluate_embeddings(
            args.checkpoint, args.embeddings, args.out, args.class_labels, args.thresholds_from,
            args.batch_size or 256, str(device), args.num_workers,
        )
    else:
        if args.class_labels is not None:
            raise AvtagError("--class-labels applies to --embeddings stores only")
        metrics = evaluate(
            args.checkpoint, args.manifest, args.out, args.thresholds_from, args.batch_size or 16, str(device),
            args.num_workers,
        )
    print((Path(args.out) / "per_class.md").read_text(), end="")
    micro = metrics["micro"]
    print(
        f"micro P {micro['precision']:.4f} R {micro['recall']:.4f} F1 {micro['f1']:.4f} | "
        f"mAP {metrics['mAP']:.4f} | outputs in {args.out}",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    main()
