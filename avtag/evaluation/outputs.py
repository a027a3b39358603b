"""Every output file of a batch evaluation, rewritten from the journal on each run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avtag.data.manifests import ClipRecord
from avtag.evaluation.records import clip_times
from avtag.evaluation.scoring import System, score_systems, system_outputs
from avtag.evaluation.writers import (
    write_failures,
    write_metrics,
    write_per_class,
    write_predictions,
    write_probabilities,
)


def write_outputs(out_dir: str | Path, records: Sequence[ClipRecord], entries: dict[str, dict[str, Any]],
                  systems: Sequence[System], branch_classes: dict[str, list[str]],
                  fusion) -> tuple[dict[str, Any], list[str]]:
    """Prediction files, probability matrices, failures, and metrics when labelled; (metrics, warnings)."""
    out_dir = Path(out_dir)
    outputs = system_outputs(records, entries, systems, branch_classes, fusion)
    times = {r.id: clip_times(r) for r in records}
    ids = [r.id for r in records]
    for system in systems:
        data = outputs[system.name]
        write_predictions(out_dir / f"predictions_{system.name}.txt", data["tags"], times)
        write_probabilities(out_dir / f"probabilities_{system.name}.csv", ids, system.classes, data["probs"])
    failed = [(r.id, r.video or r.audio or r.pack or "", entries[r.id]["reason"]) for r in records
              if entries.get(r.id, {}).get("status") == "failed"]
    write_failures(out_dir / "failures.csv", failed)
    labelled = any(r.labels for r in records)
    metrics: dict[str, Any] = {"num_clips": len(records), "num_failed": len(failed), "labelled": labelled,
                               "systems": {}}
    warnings: list[str] = []
    if labelled:
        metrics["systems"], warnings = score_systems(records, outputs, systems)
        write_per_class(out_dir / "per_class.csv", metrics)
    write_metrics(out_dir / "metrics.json", metrics)
    return metrics, warnings
