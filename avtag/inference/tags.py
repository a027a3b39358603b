"""One row of tags per file, for ``avtag run --jsonl`` / ``--csv`` over several files.

A row holds the file, whether it was tagged, its mode and duration, the detected events, the
``top_k`` most likely ones, the threshold source and the fused score of every class (CSV: one
column per class, in the order classes first appear; a file that does not score a class leaves
the cell empty). A file that failed has ``status`` "error" and its one-line message. Both files
are written atomically (:mod:`avtag.atomic`), JSON strictly.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avtag.atomic import dumps_json, write_text
from avtag.inference.results import AnalysisResult

FIXED_COLUMNS = ("input", "status", "mode", "duration_s", "threshold_source", "detected", "top_events", "error")


def tag_row(result: AnalysisResult) -> dict[str, Any]:
    """The tags of one analysed file."""
    order = result.ranking()
    scores = {name: (None if not math.isfinite(float(p)) else round(float(p), 6))
              for name, p in zip(result.classes, result.fused_probs)}
    return {
        "input": result.input,
        "status": "ok",
        "mode": result.mode,
        "duration_s": round(float(result.duration), 3),
        "threshold_source": result.threshold_source,
        "detected": result.detected_events,
        "top_events": [[result.classes[c], scores[result.classes[c]]] for c in order[:result.top_k]],
        "scores": scores,
        "error": None,
    }


def error_row(path: str | Path, message: str) -> dict[str, Any]:
    """The row of a file that could not be tagged."""
    return {"input": str(path), "status": "error", "mode": None, "duration_s": None, "threshold_source": None,
            "detected": [], "top_events": [], "scores": {}, "error": message}


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One strict-JSON object per line."""
    return write_text(path, "".join(dumps_json(row, indent=None) + "\n" for row in rows))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """The fixed columns, then one fused-score column per class."""
    classes: list[str] = []
    for row in rows:
        classes.extend(name for name in row["scores"] if name not in classes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*FIXED_COLUMNS, *classes])
    for row in rows:
        fixed = [row["input"], row["status"], row["mode"] or "",
                 "" if row["duration_s"] is None else f"{row['duration_s']:.3f}", row["threshold_source"] or "",
                 ";".join(row["detected"]), ";".join(name for name, _ in row["top_events"]), row["error"] or ""]
        scores = ["" if row["scores"].get(name) is None else f"{row['scores'][name]:.4f}" for name in classes]
        writer.writerow([*fixed, *scores])
    return write_text(path, buffer.getvalue())
