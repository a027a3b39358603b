"""The output files of an evaluation (``avtag evaluate``, ``avtag train test``): decisions,
probabilities, thresholds, metrics with their baselines, and the per-class table.

Every file goes through :mod:`avtag.atomic` (temporary file + rename); ``metrics.json`` is
strict JSON (an undefined score, e.g. the AP of a class without positives, is ``null``).
Next to the scores, ``metrics.json`` holds the label-prior and all-positive baselines of the
same clips (:func:`avtag.metrics.baseline_scores`), and the macro-F1 says how many classes
had no positive clip (they count as F1 0 in the mean).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from avtag.atomic import write_json, write_text
from avtag.threshold_sources import SAVED, thresholds_json  # noqa: F401 - re-exported: part of this module's API

def record_times(records: list[Any], clip_seconds: float | None) -> dict[str, tuple[float, float]]:
    """Each clip's start/end for ``predictions.csv``: the record's ``start``/``end`` (default 0
    and its duration, else the clip length)."""
    return {
        r.id: (r.start or 0.0, r.end if r.end is not None else (r.start or 0.0) + (r.duration or clip_seconds or 0.0))
        for r in records
    }


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
    """Decide with ``thresholds``, score, and write every output file of
    :mod:`avtag.evaluate` into ``out_dir``; returns the metrics (``header`` first).

    ``failures`` (clip id -> reason) are clips that could not be decoded: they are listed
    in ``failures.csv``, get no tag (so their labels count as misses in the tagging
    scores) and are left out of the ranking scores (their probabilities are NaN)."""
    from avtag.metrics import baseline_scores, ranking_scores, score_tagging, write_tag_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    decisions = clip_probs >= thresholds
    predicted = {rid: [classes[c] for c in np.flatnonzero(row)] for rid, row in zip(ids, decisions, strict=True)}
    write_tag_file(out / "predictions.csv", predicted, times)
    write_probabilities(out / "probabilities.csv", ids, classes, clip_probs)
    write_json(out / "thresholds.json", {"classes": classes, "thresholds": [float(t) for t in thresholds],
                                         "source": threshold_source})
    if failures is not None:  # decoded inputs: always say which failed, even none
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["clip_id", "reason"])
        writer.writerows(sorted(failures.items()))
        write_text(out / "failures.csv", buffer.getvalue())
    failures = failures or {}
    decoded = np.array([rid not in failures for rid in ids], dtype=bool)
    tagging = score_tagging(truth, predicted, classes=classes)
    ranking = ranking_scores(targets[decoded], clip_probs[decoded], classes)
    baselines = baseline_scores(targets, classes)
    metrics: dict[str, Any] = header | {
        "clips": len(ids),
        "failed_clips": len(failures),
        "thresholds": threshold_source,
        "micro": {"precision": tagging.precision, "recall": tagging.recall, "f1": tagging.f1},
        "macro_f1": tagging.macro_f1(),
        "macro_f1_absent_classes": baselines.absent_classes,
        "mAP": ranking.mean_average_precision,
        "mAUC": ranking.mean_auc,
        "d_prime": ranking.mean_d_prime,
        "baselines": baselines.as_dict(),
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
    write_json(out / "metrics.json", finite(metrics))
    write_text(out / "per_class.md", per_class_table(metrics, classes))
    return metrics


def write_probabilities(path: Path, ids: list[str], classes: list[str], probs: np.ndarray) -> None:
    """The clip probability matrix as CSV: header ``id`` + class names, 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", *classes])
    for rid, row in zip(ids, probs, strict=True):
        writer.writerow([rid, *(f"{p:.6g}" for p in row)])
    write_text(path, buffer.getvalue())


def finite(value: Any) -> Any:
    """NaN -> None so that metrics.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def per_class_table(metrics: dict[str, Any], classes: list[str]) -> str:
    """Markdown table of the per-class scores, with a micro/mean row and the baselines."""
    lines = [
        "| class | thr | P | R | F1 | TP | FP | FN | AP | AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in classes:
        s = metrics["per_class"][name]
        lines.append(
            f"| {name} | {_fmt(s['threshold'])} | {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} "
            f"| {s['tp']} | {s['fp']} | {s['fn']} | {_fmt(s['average_precision'])} | {_fmt(s['auc'])} |"
        )
    micro = metrics["micro"]
    lines.append(
        f"| **micro / mean** | | {_fmt(micro['precision'])} | {_fmt(micro['recall'])} | {_fmt(micro['f1'])} "
        f"| | | | {_fmt(metrics['mAP'])} | {_fmt(metrics['mAUC'])} |"
    )
    base = metrics.get("baselines")
    if base is not None:
        prior, every = base["label_prior"], base["all_positive"]
        lines.append(
            f"| *baseline: label prior* | | | | {_fmt(prior['micro_f1'])} | | | | {_fmt(prior['mAP'])} "
            f"| {_fmt(prior['mAUC'])} |"
        )
        lines.append(f"| *baseline: all positive* | | | 1.000 | {_fmt(every['micro_f1'])} | | | | | |")
    if "localisation" in metrics:
        lines.append("")
        lines.append(f"Segment-based localisation F1 (1 s): {_fmt(metrics['localisation']['segment_f1'])}")
    return "\n".join(lines) + "\n"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The scores next to their baselines, and the macro-F1 with its absent classes, for a CLI."""
    micro, base = metrics["micro"], metrics["baselines"]
    absent = metrics.get("macro_f1_absent_classes") or []
    classes = len(metrics["per_class"])
    macro = f"macro-F1 {_fmt(metrics['macro_f1'])}"
    if absent:
        macro += f" ({len(absent)} of {classes} classes have no positive clip here and count as F1 0)"
    prior, every = base["label_prior"], base["all_positive"]
    return [
        f"micro P {micro['precision']:.4f} R {micro['recall']:.4f} F1 {micro['f1']:.4f} | {macro} | "
        f"mAP {_fmt(metrics['mAP'])} | mAUC {_fmt(metrics['mAUC'])}",
        f"baselines: label prior micro-F1 {_fmt(prior['micro_f1'])} (its {prior['classes_predicted']} most frequent "
        f"class(es) on every clip), mAP {_fmt(prior['mAP'])}, mAUC {_fmt(prior['mAUC'])}; "
        f"all positive micro-F1 {_fmt(every['micro_f1'])}",
    ]


__all__ = ["SAVED", "finite", "record_times", "per_class_table", "summary_lines", "thresholds_json", "write_outputs", "write_probabilities"]


def print_report(out_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Print the per-class table, the summary lines and where the files are."""
    out_dir = Path(out_dir)
    print((out_dir / "per_class.md").read_text(), end="")
    for line in summary_lines(metrics):
        print(line)
    print(f"outputs in {out_dir.resolve()}")


def write_dataset_outputs(
    out_dir: str | Path,
    header: dict[str, Any],
    dataset: Any,
    indices: np.ndarray,
    targets: np.ndarray,
    clip_probs: np.ndarray,
    classes: list[str],
    thresholds: np.ndarray,
    threshold_source: str,
) -> dict[str, Any]:
    """:func:`write_outputs` for the clips ``indices`` of a training data set (``avtag train
    test``): clip ids and times from its manifest records when it has them, else the indices."""
    records = [dataset.records[int(i)] for i in indices] if hasattr(dataset, "records") else None
    ids = [r.id for r in records] if records else [str(int(i)) for i in indices]
    return write_outputs(
        out_dir, header, ids=ids,
        truth={rid: [classes[c] for c in np.flatnonzero(row)] for rid, row in zip(ids, targets, strict=True)},
        targets=targets, clip_probs=clip_probs, classes=classes, thresholds=thresholds,
        threshold_source=threshold_source,
        times=record_times(records, getattr(dataset, "clip_seconds", None)) if records else {},
    )

