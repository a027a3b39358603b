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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from avtag.audio.tagger import AudioTagger
from avtag.data.datasets import ClipDataset
from avtag.data.manifests import read_manifest
from avtag.device import resolve_device
from avtag.errors import AvtagError, ManifestError, cli_guard
from avtag.evaluate_embeddings import (
    FeatureModel,
    evaluate_embeddings,
    load_feature_model,
    load_feature_thresholds,
    run_feature_model,
)
from avtag.evaluate_outputs import per_class_table, print_report, record_times, write_outputs
from avtag.threshold_sources import SAVED, thresholds_from_source


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
    tune on, sharing no clip with ``manifest``) and a description of where they came from."""

    def validation_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
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
        validation = ClipDataset(path, frontend=tagger.frontend, classes=tagger.classes, on_error="report")
        probs, _, _, failures = run_tagger(tagger, validation, batch_size, num_workers)
        decoded = np.setdiff1d(np.arange(len(probs)), list(failures))
        return validation.targets[decoded] > 0.5, probs[decoded]

    return thresholds_from_source(source, tagger.classes, tagger.thresholds, "validation manifest", validation_scores)


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
    times = record_times(records, clip_seconds)
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
    device = resolve_device(args.device)
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
    print_report(args.out, metrics)
    return 0


__all__ = [
    "FeatureModel", "SAVED", "evaluate", "evaluate_embeddings", "load_feature_model", "load_feature_thresholds",
    "load_thresholds", "main", "per_class_table", "run_feature_model", "run_tagger", "write_outputs",
]

if __name__ == "__main__":
    main()
