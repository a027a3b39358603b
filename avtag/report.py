"""Visual reports of one :func:`avtag.inference.pipeline.analyse` result: a self-contained HTML page or a
single PNG figure.

Both show (1) the log-mel spectrogram with the frame-level probabilities of the detected
events underneath (the audio model's MIL instance outputs, 004 §2.1), (2) the key frames
with their top recognised objects (004 §2.2), and (3) the per-event bars of the fused
probabilities with the audio and video probabilities and the class thresholds (004 §2.3,
§3.3). The HTML page embeds every image as a base64 PNG (``data:`` URI) and uses no
external resource (no scripts, fonts or style sheets), so it opens offline and can be
mailed as one file. Figures are drawn with matplotlib's Agg backend.

Choices where the paper is silent:
- Frame-probability panel: only the detected events are drawn (all 17 would be
  unreadable); with none detected, the three most probable events by audio are drawn,
  labelled as such. Each curve has its class threshold as a dashed line of the same colour.
- Key frames: at most 8 are shown (the first of each window, then in time order; a frame
  picked by two overlapping windows once); each caption lists its top 3 objects.
- The spectrogram is the audio model's own log-mel front-end output (or the "crnn"
  preset's when no audio model ran), the whole file at once.
- Without frame-level audio output (no audio model ran) no frame-probability panel is drawn;
  without any sound track, no audio figure at all.
- The event table is ranked by fused probability; a sentence says where the thresholds come
  from (:mod:`avtag.inference.decisions`). With several windows, a table gives each window's
  fused probabilities of the detected and the ``top_k`` events.
- The HTML page embeds the sound track as FLAC in an ``<audio>`` player (the first
  ``MAX_PLAYER_SECONDS``, 10 minutes, of a longer file, and the page says so).
- Files are written atomically (:mod:`avtag.atomic`).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from avtag.inference.results import AnalysisResult

MAX_KEYFRAMES_SHOWN = 8
MAX_PLAYER_SECONDS = 600.0
MAX_WINDOW_ROWS = 200  # windows listed in the per-window table (the rest are in --json)
MAX_WINDOW_COLUMNS = 8  # events in the per-window table
OBJECTS_PER_KEYFRAME = 3
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _shown_keyframes(result: AnalysisResult) -> list:
    frames, seen = [], set()
    for k in result.keyframes:  # overlapping windows can pick the same frame twice
        if k.image is not None and round(k.time, 3) not in seen:
            seen.add(round(k.time, 3))
            frames.append(k)
    if len(frames) <= MAX_KEYFRAMES_SHOWN:
        return sorted(frames, key=lambda k: k.time)
    firsts = {k.window: k for k in reversed(frames)}  # first key frame of each window
    chosen = list(firsts.values())[:MAX_KEYFRAMES_SHOWN]
    for frame in frames:
        if len(chosen) >= MAX_KEYFRAMES_SHOWN:
            break
        if frame not in chosen:
            chosen.append(frame)
    return sorted(chosen, key=lambda k: k.time)


def _curve_events(result: AnalysisResult) -> tuple[list[int], str]:
    detected = [c for c in range(len(result.classes)) if result.detected[c]]
    if detected:
        return detected, "detected events"
    if result.frame_probs is None:
        return [], ""
    top = np.argsort(-result.frame_probs.max(axis=0))[:3]
    return [int(c) for c in top], "no event detected: the 3 most probable"


# --------------------------------------------------------------------------- panels


def _draw_spectrogram(ax, result: AnalysisResult) -> None:
    if result.spectrogram is None:
        ax.text(0.5, 0.5, "no audio", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_yticks([])
        ax.set_title("log-mel spectrogram")
        return
    spec = np.asarray(result.spectrogram)
    end = spec.shape[0] * (result.spectrogram_hop or 1.0)
    ax.imshow(spec.T, origin="lower", aspect="auto", extent=(0.0, end, 0, spec.shape[1]), cmap="magma",
              interpolation="nearest")
    ax.set_ylabel("mel bin")
    ax.set_title("log-mel spectrogram")
    ax.set_xlim(0.0, max(end, result.duration))


def _draw_frame_probs(ax, result: AnalysisResult) -> None:
    events, caption = _curve_events(result)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(0.0, max(result.duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frame prob.")
    if result.frame_probs is None or not events:
        ax.text(0.5, 0.5, "no frame-level audio output", ha="center", va="center", transform=ax.transAxes,
                color="0.4")
        return
    probs = np.asarray(result.frame_probs)
    hop = float(result.frame_hop or 1.0)
    times = (np.arange(probs.shape[0]) + 0.5) * hop
    thresholds = result.audio_thresholds if result.audio_thresholds is not None else result.thresholds
    for i, c in enumerate(events):
        color = _COLORS[i % len(_COLORS)]
        ax.plot(times, probs[:, c], color=color, lw=1.4, label=result.classes[c])
        ax.axhline(float(thresholds[c]), color=color, lw=0.8, ls="--")
        for onset, offset in result.time_ranges.get(result.classes[c], []):
            ax.axvspan(onset, offset, color=color, alpha=0.12, lw=0)
    ax.legend(loc="upper right", fontsize=7, title=caption, title_fontsize=7, framealpha=0.8)


def _draw_bars(ax, result: AnalysisResult) -> None:
    order = result.ranking()[:30]
    y = np.arange(len(order))
    fused = np.asarray(result.fused_probs)[order]
    colors = ["#2ca02c" if result.detected[c] else "#9bb7d4" for c in order]
    ax.barh(y, fused, color=colors, height=0.7, label="fused")
    if result.audio_probs is not None:
        ax.scatter(np.asarray(result.audio_probs)[order], y, marker="|", s=90, color="#d62728", label="audio",
                   zorder=3)
    if result.video_probs is not None:
        ax.scatter(np.asarray(result.video_probs)[order], y, marker="|", s=90, color="#ff7f0e", label="video",
                   zorder=3)
    if result.calibrated:
        ax.scatter(np.asarray(result.thresholds)[order], y, marker="d", s=18, color="black", label="threshold",
                   zorder=4)
    ax.set_yticks(y, [result.classes[c] for c in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability (green bar: detected)")
    ax.set_title("per-event probabilities, most probable first")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8)


def _draw_keyframe(ax, keyframe) -> None:
    ax.imshow(keyframe.image)
    ax.set_xticks([])
    ax.set_yticks([])
    top = keyframe.objects[:OBJECTS_PER_KEYFRAME]
    lines = [f"{keyframe.time:.1f} s"] + [f"{_short(name)} {p:.2f}" for name, p in top]
    ax.set_title("\n".join(lines), fontsize=7, loc="left")


def _short(name: str, limit: int = 22) -> str:
    name = name.split(",")[0]
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _figure_to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------- outputs


def has_audio_panel(result: AnalysisResult) -> bool:
    """Whether there is anything to draw about the sound: a spectrogram or frame outputs."""
    return result.spectrogram is not None or result.frame_probs is not None


def audio_figure(result: AnalysisResult):
    """Spectrogram over frame-level probabilities of the detected events (the latter only when
    an audio model gave frame outputs)."""
    plt = _pyplot()
    if result.frame_probs is None:
        fig, top = plt.subplots(1, 1, figsize=(10, 2.6))
        _draw_spectrogram(top, result)
        top.set_xlabel("time (s)")
    else:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True, height_ratios=(1.3, 1.0))
        _draw_spectrogram(top, result)
        _draw_frame_probs(bottom, result)
    fig.tight_layout()
    return fig


def bars_figure(result: AnalysisResult):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    _draw_bars(ax, result)
    fig.tight_layout()
    return fig


def keyframe_png(keyframe, max_side: int = 320) -> bytes:
    """The key frame as a PNG, downscaled so its longer side is at most ``max_side``."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(keyframe.image, dtype=np.uint8))
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_png(result: AnalysisResult, path: str | Path) -> Path:
    """One figure: spectrogram (+ frame probabilities), key frames, fused per-event bars."""
    from avtag.atomic import write_bytes

    plt = _pyplot()
    keyframes = _shown_keyframes(result)
    columns = max(len(keyframes), 1)
    rows: list[tuple[str, float]] = []
    if result.spectrogram is not None or result.frame_probs is not None:
        rows.append(("spectrogram", 1.3))
    if result.frame_probs is not None:
        rows.append(("frames", 1.0))
    if keyframes:
        rows.append(("keyframes", 1.2))
    rows.append(("bars", 2.2))
    fig = plt.figure(figsize=(12, 2.5 + 2.3 * len(rows)))
    grid = fig.add_gridspec(len(rows), columns, height_ratios=[r for _, r in rows], hspace=0.55)
    axes: dict[str, object] = {}
    for i, (kind, _) in enumerate(rows):
        if kind == "keyframes":
            for j, keyframe in enumerate(keyframes):
                _draw_keyframe(fig.add_subplot(grid[i, j]), keyframe)
            continue
        ax = fig.add_subplot(grid[i, :], sharex=axes.get("spectrogram") if kind == "frames" else None)
        axes[kind] = ax
        {"spectrogram": _draw_spectrogram, "frames": _draw_frame_probs, "bars": _draw_bars}[kind](ax, result)
    fig.suptitle(f"avtag: {Path(result.input).name} ({result.mode}, {result.duration:.1f} s)", fontsize=11)
    return write_bytes(path, _figure_to_png(fig))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child, th:last-child, td.ranges { text-align: left; }
tr.detected td { background: #e6f4e6; font-weight: bold; }
.notes { color: #8a5a00; } .meta { color: #555; font-size: 0.85em; }
figure { display: inline-block; margin: 0 10px 10px 0; vertical-align: top; width: 240px; }
figure img { width: 240px; border: 1px solid #ccc; } figcaption { font-size: 0.8em; }
img.wide { max-width: 100%; }
"""


THRESHOLD_SOURCES = {
    "fusion file": "Thresholds and fusion weights come from the fusion file, tuned on validation data: "
                   "decisions are calibrated.",
    "paper-default": "Fusion uses the weights published in 004 §3.4 (audio weight 0.2 on the seven events where "
                     "video won, 0.8 elsewhere); thresholds are interpolated between the audio checkpoint's and an "
                     "untuned video threshold of 0.5, not tuned on your data. Tune a fusion file on validation "
                     "data (avtag fusion fit) for calibrated decisions.",
    "audio checkpoint": "Thresholds are the audio checkpoint's own (tuned when it was trained, 004 §3.3).",
    "--threshold": "One threshold, given with --threshold, on every event; not tuned.",
    "none": "The video branch alone is uncalibrated (its event scores of a window sum to about 1): events are "
            "ranked, not decided. Tune a fusion file on validation data (avtag fusion fit), or pass --threshold.",
}


def audio_player(result: AnalysisResult) -> str:
    """An ``<audio>`` element holding the sound track as FLAC (empty string without one)."""
    if result.waveform is None or not result.sample_rate:
        return ""
    import soundfile as sf

    samples = np.asarray(result.waveform, dtype=np.float32)
    limit = int(MAX_PLAYER_SECONDS * result.sample_rate)
    caption = "" if len(samples) <= limit else f" (the first {MAX_PLAYER_SECONDS / 60:g} minutes)"
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples[:limit], -1.0, 1.0), int(result.sample_rate), format="FLAC", subtype="PCM_16")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<p><audio controls preload="metadata" src="data:audio/flac;base64,{encoded}"></audio>'
            f'<span class="meta"> sound track{html.escape(caption)}</span></p>')


def render_html(result: AnalysisResult) -> str:
    """The report page as a string (self-contained)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>avtag report: {esc(Path(result.input).name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>avtag report: {esc(Path(result.input).name)}</h1>",
        f'<p class="meta">mode: {esc(result.mode)} &middot; duration {result.duration:.2f} s &middot; '
        f"{len(result.windows)} window(s) &middot; fusion: {esc(str(result.fusion.get('method')))} &middot; "
        f"thresholds: {esc(result.threshold_source)}</p>",
        audio_player(result),
    ]
    if result.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>")
    detected = result.detected_events
    decided = (esc(", ".join(detected)) if detected else "none") if result.calibrated else \
        "&ndash; (no calibrated threshold: events ranked, not decided)"
    parts.append(f"<h2>Detected events</h2><p>{decided}</p>")
    parts.append(f'<p class="meta">{esc(THRESHOLD_SOURCES.get(result.threshold_source, result.threshold_source))}</p>')
    if result.video_evidence:
        items = []
        for e in result.video_evidence:
            objects = "; ".join(f"{esc(_short(o.name, 40))} {o.probability:.2f}" for o in e.objects[:4])
            items.append(f"<li><b>{esc(e.event)}</b> {e.probability:.3f} &larr; {objects or '&ndash;'}</li>")
        parts.append("<h2>Video evidence (uncalibrated)</h2><ul>" + "".join(items) + "</ul>")
    if has_audio_panel(result):
        title = "spectrogram and frame-level probabilities" if result.frame_probs is not None else "spectrogram"
        parts.append(f"<h2>Audio: {title}</h2>")
        parts.append(f'<img class="wide" alt="{title}" src="{_data_uri(_figure_to_png(audio_figure(result)))}">')
    keyframes = _shown_keyframes(result)
    if keyframes:
        parts.append("<h2>Key frames and recognised objects</h2><div>")
        for keyframe in keyframes:
            objects = "<br>".join(f"{esc(_short(name, 40))} {p:.2f}" for name, p in keyframe.objects[:OBJECTS_PER_KEYFRAME])
            parts.append(
                f'<figure><img alt="key frame at {keyframe.time:.2f} s" src="{_data_uri(keyframe_png(keyframe))}">'
                f"<figcaption><b>{keyframe.time:.2f} s</b><br>{objects}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("<h2>Per-event probabilities</h2>")
    parts.append(f'<img class="wide" alt="per-event probabilities" src="{_data_uri(_figure_to_png(bars_figure(result)))}">')
    parts.append(_event_table(result))
    if len(result.windows) > 1:
        parts.append(_window_table(result))
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(value) -> str:
    return "&ndash;" if value is None or not np.isfinite(value) else f"{float(value):.3f}"


def _event_table(result: AnalysisResult) -> str:
    header = ("<tr><th>rank</th><th>event</th><th>audio</th><th>video</th><th>fused</th><th>threshold</th>"
              "<th>detected</th><th>time ranges (s)</th></tr>")
    rows = []
    for rank, c in enumerate(result.ranking(), start=1):
        name = result.classes[c]
        audio = None if result.audio_probs is None else result.audio_probs[c]
        video = None if result.video_probs is None else result.video_probs[c]
        ranges = ", ".join(f"{a:.1f}&ndash;{b:.1f}" for a, b in result.time_ranges.get(name, []))
        css = ' class="detected"' if result.detected[c] else ""
        rows.append(
            f"<tr{css}><td>{rank}</td><td>{html.escape(name)}</td><td>{_fmt(audio)}</td><td>{_fmt(video)}</td>"
            f"<td>{_fmt(result.fused_probs[c])}</td><td>{_fmt(result.thresholds[c])}</td>"
            f"<td>{'yes' if result.detected[c] else ''}</td><td class='ranges'>{ranges}</td></tr>"
        )
    return f'<table class="events">{header}{"".join(rows)}</table>'


def _window_table(result: AnalysisResult) -> str:
    """Each window's fused probabilities of the detected and the most likely events."""
    order = result.ranking()
    events = [c for c in order if result.detected[c]] + [c for c in order[:result.top_k] if not result.detected[c]]
    events = events[:MAX_WINDOW_COLUMNS]
    header = "<tr><th>window</th>" + "".join(f"<th>{html.escape(_short(result.classes[c], 18))}</th>" for c in events)
    header += "<th>detected</th></tr>"
    rows = []
    for w in result.windows[:MAX_WINDOW_ROWS]:
        cells = "".join(f"<td>{_fmt(w.fused_probs[c])}</td>" for c in events)
        padded = "" if w.valid_seconds >= w.end - w.start - 1e-6 else f" ({w.valid_seconds:.1f} s real)"
        rows.append(f"<tr><td>{w.start:.1f}&ndash;{w.end:.1f} s{padded}</td>{cells}"
                    f"<td class='ranges'>{html.escape(', '.join(w.detected)) or '&ndash;'}</td></tr>")
    more = len(result.windows) - MAX_WINDOW_ROWS
    tail = f'<p class="meta">{more} more windows in --json</p>' if more > 0 else ""
    return f'<h2>Windows: fused probabilities</h2><table class="windows">{header}{"".join(rows)}</table>{tail}'


def write_html(result: AnalysisResult, path: str | Path) -> Path:
    """Write the self-contained HTML report (atomically)."""
    from avtag.atomic import write_text

    return write_text(path, render_html(result))


def write_report(result: AnalysisResult, path: str | Path) -> Path:
    """``.html``/``.htm`` -> HTML page, ``.png`` -> one figure."""
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        return write_html(result, path)
    if suffix == ".png":
        return write_png(result, path)
    raise ValueError(f"report must end in .html or .png, got {path}")
