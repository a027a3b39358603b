"""The text table ``avtag run`` prints for one file.

Rows are the model's classes ranked by fused probability (all of them up to ``MAX_ROWS``;
beyond, the detected and the top ones, the rest are in ``--json``); an event the video branch
ranks among its ``top_k`` but that is not decided is marked ``(video)``: video evidence,
uncalibrated. Then the decisions and
where their thresholds come from, the ``top_k`` most likely events, the video evidence with
the objects that led to each event, the windows, the key frames and the notes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avtag.inference.results import AnalysisResult

MAX_ROWS = 20  # more classes than this (e.g. AudioSet's 527): only the detected and top rows


def _cell(x) -> str:
    return "    -" if x is None or not np.isfinite(x) else f"{float(x):5.3f}"


def _short(name: str) -> str:
    return name.split(",")[0]


def _decision(detected: bool, video_evidence: bool) -> str:
    """``YES``; ``(video)`` for an undecided event among the video branch's top (uncalibrated) ones."""
    return "YES" if detected else ("(video)" if video_evidence else "")


def format_table(result: AnalysisResult) -> str:
    """The human-readable summary printed by the CLI."""
    order = result.ranking()
    top = set(order[:result.top_k])
    shown = order if len(order) <= MAX_ROWS else [c for c in order if c in top or result.detected[c]][:MAX_ROWS]
    name_width = max([len(result.classes[c]) for c in shown] + [5])
    evidence = {e.event.casefold() for e in result.video_evidence}
    windows = len(result.windows)
    lines = [
        f"{Path(result.input).name}: {result.mode}, {result.duration:.2f} s, "
        f"{windows} window{'s' if windows != 1 else ''} of {result.window_seconds:g} s"
        + (f" (hop {result.window_hop:g} s)" if windows > 1 else "")
        + f", fusion: {result.fusion.get('method')}, thresholds: {result.threshold_source}",
        f"rank  {'event':<{name_width}}  audio  video  fused  thresh  detected  time ranges (s)",
    ]
    for c in shown:
        name = result.classes[c]
        audio = None if result.audio_probs is None else result.audio_probs[c]
        video = None if result.video_probs is None else result.video_probs[c]
        ranges = ""
        if result.detected[c] and result.frame_probs is not None:
            spans = result.time_ranges.get(name) or []
            ranges = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in spans) or "(no audio frame above threshold)"
        lines.append(
            f"{order.index(c) + 1:>4}  {name:<{name_width}}  {_cell(audio)}  {_cell(video)}  "
            f"{_cell(result.fused_probs[c])}  {_cell(result.thresholds[c]):>6}  "
            f"{_decision(result.detected[c], name.casefold() in evidence):<8}  {ranges}".rstrip()
        )
    if len(shown) < len(order):
        lines.append(f"      ... {len(order) - len(shown)} more events (all in --json)")
    if result.calibrated:
        lines.append(f"detected: {', '.join(result.detected_events) or 'none'}")
    else:
        lines.append("detected: - (no calibrated threshold: events ranked, not decided)")
    lines.append(f"most likely (top {result.top_k}): "
                 + ", ".join(f"{result.classes[c]} {result.fused_probs[c]:.3f}" for c in order[:result.top_k]))
    if result.video_evidence:
        lines.append(f"video evidence (uncalibrated, top {len(result.video_evidence)}): event <- key-frame objects")
        for e in result.video_evidence:
            objects = "; ".join(
                f"{_short(o.name)} {o.probability:.2f}"
                + (f" [{', '.join(f'{t:.1f}' for t in o.keyframe_times)} s]" if o.keyframe_times else "")
                for o in e.objects[:4])
            where = f" (window {e.window})" if windows > 1 else ""
            lines.append(f"  {e.event} {e.probability:.3f}{where} <- {objects or '-'}")
    if windows > 1:
        for w in result.windows:
            lines.append(f"  window {w.start:7.1f}-{w.end:7.1f} s: {', '.join(w.detected) or '-'}")
    if result.keyframes:
        lines.append("key frames (time, top recognised objects):")
        for k in result.keyframes:
            objects = ", ".join(f"{_short(name)} {p:.2f}" for name, p in k.objects[:5])
            where = f"  window {k.window}" if windows > 1 else ""
            lines.append(f"{where}  {k.time:7.2f} s  {objects}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
