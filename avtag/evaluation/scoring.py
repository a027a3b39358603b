"""From journal entries to each system's probabilities, decisions, scores and baselines.

Systems and their classes (issue 9 item 2): ``audio`` scores the audio model's own classes,
``video`` the video branch's event list, ``fused`` the classes both share (in the audio
model's order). Thresholds (our documented choice): ``audio`` the checkpoint's (tuned on
validation in training), ``video`` 0.5 (untuned), each overridden on the fused classes by the
fusion file's per-branch thresholds when ``--fusion`` is given (tuned on validation, 004
§3.3); ``fused`` the fusion file's (or the paper-default interpolation). A clip with one
branch missing is scored by the other branch alone in ``fused``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avtag.data.manifests import ClipRecord
from avtag.evaluation.baselines import tagging_baselines

DEFAULT_VIDEO_THRESHOLD = 0.5  # untuned video branch (as avtag run): most of the object mass on the event


@dataclass
class System:
    """What one system scores: its classes and the thresholds used on them."""

    name: str
    classes: list[str]
    thresholds: np.ndarray
    threshold_source: str


def _branch_probs(entry: dict[str, Any], branch: str, columns: list[int] | None) -> np.ndarray | None:
    values = entry.get(branch)
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    return values if columns is None else values[columns]


def system_outputs(records: Sequence[ClipRecord], entries: dict[str, dict[str, Any]], systems: Sequence[System],
                   branch_classes: dict[str, list[str]], fusion) -> dict[str, dict[str, Any]]:
    """Per system: probabilities (N, C) with NaN rows where it could not run, and tags per clip."""
    out = {}
    for system in systems:
        probs = np.full((len(records), len(system.classes)), np.nan)
        tags: dict[str, list[str]] = {}
        used = {"audio": ("audio",), "video": ("video",), "fused": ("audio", "video")}[system.name]
        columns = {b: [branch_classes[b].index(c) for c in system.classes] if b in used else None
                   for b in ("audio", "video")}
        for i, record in enumerate(records):
            entry = entries.get(record.id, {})
            tags[record.id] = []
            if entry.get("status") != "ok":
                continue
            audio = _branch_probs(entry, "audio", columns["audio"]) if system.name != "video" else None
            video = _branch_probs(entry, "video", columns["video"]) if system.name != "audio" else None
            if audio is None and video is None:
                continue
            if system.name == "fused":
                probs[i] = fusion.fuse(audio, video)
                thresholds = fusion.thresholds_for(audio is not None, video is not None)
            else:
                probs[i] = audio if audio is not None else video
                thresholds = system.thresholds
            tags[record.id] = [system.classes[c] for c in np.flatnonzero(probs[i] >= thresholds)]
        out[system.name] = {"probs": probs, "tags": tags}
    return out


def score_systems(records: Sequence[ClipRecord], outputs: dict[str, dict[str, Any]],
                  systems: Sequence[System]) -> tuple[dict[str, Any], list[str]]:
    """Metrics per system (with its baselines) and warnings, for labelled records."""
    from avtag.metrics import ranking_scores, score_tagging

    metrics: dict[str, Any] = {}
    absent_by_system: dict[tuple[str, ...], list[str]] = {}
    for system in systems:
        known = set(system.classes)
        truth = {r.id: [label for label in r.labels if label in known] for r in records}
        ignored = sum(len(r.labels) - len(truth[r.id]) for r in records)
        targets = np.array([[name in truth[r.id] for name in system.classes] for r in records], dtype=bool)
        data = outputs[system.name]
        scores = score_tagging(truth, data["tags"], classes=system.classes)
        scored = ~np.isnan(data["probs"]).any(axis=1)
        ranking = ranking_scores(targets[scored], data["probs"][scored], system.classes) if scored.any() else None
        absent = [n for n, any_pos in zip(system.classes, targets.any(axis=0)) if not any_pos]
        if absent:
            absent_by_system.setdefault((len(system.classes), *absent), []).append(system.name)
        present = [s.f1 for n, s in scores.class_wise.items() if n not in absent]
        metrics[system.name] = {
            "classes": list(system.classes),
            "thresholds": [float(t) for t in system.thresholds],
            "threshold_source": system.threshold_source,
            "precision": scores.precision, "recall": scores.recall, "f1": scores.f1,
            "macro_f1": scores.macro_f1(),
            "macro_f1_present": float(np.mean(present)) if present else None,
            "mAP": None if ranking is None else ranking.mean_average_precision,
            "mean_auc": None if ranking is None else ranking.mean_auc,
            "clips_with_probabilities": int(scored.sum()),
            "labels_outside_classes": int(ignored),
            "classes_without_positives": absent,
            "baselines": tagging_baselines(targets, system.classes),
            "class_wise": {name: {"precision": s.precision, "recall": s.recall, "f1": s.f1,
                                  "tp": s.tp, "fp": s.fp, "fn": s.fn}
                           for name, s in scores.class_wise.items()},
        }
    warnings = [f"{'/'.join(names)}: {len(key) - 1} of {key[0]} classes have no positive clip in this manifest "
                f"({', '.join(key[1:6])}{', ...' if len(key) > 6 else ''}); macro-F1 counts them as 0, "
                "macro_f1_present leaves them out" for key, names in absent_by_system.items()]
    return metrics, warnings


def format_metrics(metrics: dict[str, Any]) -> str:
    """Per-class F1 of every system, micro P/R/F1, mAP, and the baselines (percent)."""
    systems = list(metrics["systems"])
    if not systems:
        return f"{metrics['num_clips']} clips ({metrics['num_failed']} failed); no labels: no scores"
    names: list[str] = []
    for s in systems:
        names.extend(n for n in metrics["systems"][s]["class_wise"] if n not in names)
    width = max(len(n) for n in [*names, "label-prior micro f1"])

    def cell(value: float | None) -> str:
        return f"{'-':>6}" if value is None else f"{100 * value:6.1f}"

    lines = [f"{'F1 (%)':<{width}}  " + "  ".join(f"{s:>6}" for s in systems)]
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(
            cell((metrics["systems"][s]["class_wise"].get(name) or {}).get("f1")) for s in systems))
    for key in ("precision", "recall", "f1"):
        lines.append(f"{'micro ' + key:<{width}}  " + "  ".join(cell(metrics["systems"][s][key]) for s in systems))
    lines.append(f"{'mAP':<{width}}  " + "  ".join(cell(metrics["systems"][s]["mAP"]) for s in systems))
    for base, label in (("label_prior", "label-prior"), ("all_positive", "all-positive")):
        lines.append(f"{label + ' micro f1':<{width}}  " + "  ".join(
            cell(metrics["systems"][s]["baselines"][base]["f1"]) for s in systems))
    lines.append(f"{'label-prior mAP':<{width}}  " + "  ".join(
        cell(metrics["systems"][s]["baselines"]["label_prior"]["mAP"]) for s in systems))
    lines.append(f"{metrics['num_clips']} clips, {metrics['num_failed']} failed")
    return "\n".join(lines)
