"""From branch outputs to fused probabilities and decisions over the model's own classes.

The result's classes are the audio checkpoint's class list when the audio branch runs, else
the video branch's event list. The video branch scores its own event list (the 17 DCASE 2017
events of ``data_manifests/dcase17_events.csv`` today); a class of the audio model is fused
(004 §2.3) when the video branch scores an event of the same name (compared case-insensitively),
and is decided by the audio branch alone otherwise.

Where thresholds come from (``threshold_source``):

* ``"fusion file"``: a fusion file tuned on validation data (``avtag fusion fit``), the only
  calibrated source for the video branch and for fused scores.
* ``"paper-default"`` (both branches, no fusion file): the weights published in 004 §3.4
  (audio weight 0.2 on the seven events where video won, 0.8 elsewhere) with thresholds
  interpolated between the audio checkpoint's and an untuned video threshold of 0.5
  (:meth:`avtag.fusion.FusionModel.paper_default`, our documented choice); the notes say so.
* ``"audio checkpoint"``: the audio branch alone, with the checkpoint's thresholds (004 §3.3).
* ``"--threshold"``: one global threshold given by the user.
* ``"none"``: the video branch alone without a fusion file. Its event scores of a window
  sum to about one (top-1 mapping of 004 §2.2.2), so no fixed threshold is meaningful: events
  are ranked and the most likely ones shown as (uncalibrated) video evidence, never decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avtag.errors import InputFileError

DEFAULT_VIDEO_THRESHOLD = 0.5  # untuned video threshold used only to interpolate paper-default thresholds

CALIBRATION_HINT = (
    "for calibrated decisions, tune a fusion file on your validation data (avtag eval-batch on a validation "
    "manifest, then avtag fusion fit --eval-dir RUN --out fusion.json) and pass --fusion fusion.json"
)


def shared_columns(classes: Sequence[str], video_events: Sequence[str]) -> list[int | None]:
    """For each class, the index of the video event of the same name (case-insensitive) or None."""
    index = {name.casefold(): i for i, name in enumerate(video_events)}
    return [index.get(name.casefold()) for name in classes]


def align_video(video_probs: np.ndarray, columns: Sequence[int | None]) -> np.ndarray:
    """(W, E) video probabilities as (W, C) over the result's classes, NaN where not scored."""
    out = np.full((video_probs.shape[0], len(columns)), np.nan)
    for c, e in enumerate(columns):
        if e is not None:
            out[:, c] = video_probs[:, e]
    return out


@dataclass
class Decisions:
    fused_windows: np.ndarray  # (W, C)
    thresholds: np.ndarray  # (C,), NaN where none exists
    audio_thresholds: np.ndarray | None  # thresholds of the audio branch's frame outputs (time ranges)
    threshold_source: str
    fusion_info: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def decide(classes: Sequence[str], audio_windows: np.ndarray | None, checkpoint_thresholds: np.ndarray | None,
           video_windows: np.ndarray | None, fusion=None, threshold: float | None = None,
           models: dict[str, Any] | None = None) -> Decisions:
    """Fuse and threshold (see the module docstring). ``video_windows`` is aligned to ``classes``."""
    from avtag.fusion import FusionModel, fuse

    n = len(classes)
    has_audio = audio_windows is not None
    shared = np.zeros(n, bool) if video_windows is None else np.isfinite(video_windows).all(axis=0)
    has_video = bool(shared.any())
    both = has_audio and has_video
    weights = np.ones(n)
    thresholds = np.full(n, np.nan)
    audio_t = None if checkpoint_thresholds is None else np.asarray(checkpoint_thresholds, dtype=np.float64)
    notes: list[str] = []
    names = [classes[c] for c in np.flatnonzero(shared)]
    if fusion is None:
        if both:
            paper = FusionModel.paper_default(audio_t[shared], np.full(int(shared.sum()), DEFAULT_VIDEO_THRESHOLD),
                                              classes=names, sources=models)
            weights[shared] = paper.audio_weights
            thresholds[:] = audio_t
            thresholds[shared] = paper.thresholds
            source, info = "paper-default", {"method": "paper-default", "file": None, "tuned_on": None}
            notes.append(
                "fusion: paper-default, not tuned on your data: the weights published in 004 §3.4 (audio weight "
                "0.2 on the 7 events where video won, 0.8 elsewhere), thresholds interpolated "
                "t = w*t_audio + (1-w)*0.5 between the audio checkpoint's and an untuned video threshold; "
                + CALIBRATION_HINT)
        elif has_audio:
            thresholds[:] = audio_t
            source, info = "audio checkpoint", {"method": "single branch", "file": None, "tuned_on": None}
        else:
            source, info = "none", {"method": "single branch", "file": None, "tuned_on": None}
            notes.append("the video branch alone is uncalibrated (its event scores of a window sum to about 1): "
                         "events are ranked, not decided; " + CALIBRATION_HINT + ", or set --threshold")
    else:
        index = {name: i for i, name in enumerate(fusion.classes)}
        path = fusion.settings.get("path")

        def pick(values: np.ndarray, fallback: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
            out = np.full(n, np.nan) if fallback is None else np.array(fallback, dtype=np.float64)
            for c in np.flatnonzero(mask):
                if classes[c] in index:
                    out[c] = values[index[classes[c]]]
            return out

        if has_video:
            missing = [name for name in names if name not in index]
            if missing and (both or len(missing) == len(names)):
                raise InputFileError(f"the fusion file has no entry for {missing[0]!r} "
                                     f"({len(missing)} of the {len(names)} fused classes)", path)
        if has_audio:
            audio_t = pick(fusion.audio_thresholds, audio_t, np.ones(n, bool))
        if both:
            weights = pick(fusion.audio_weights, weights, shared)
            thresholds = audio_t.copy()
            thresholds[shared] = pick(fusion.thresholds, None, shared)[shared]
        elif has_audio:
            thresholds = audio_t.copy()
        else:
            thresholds = pick(fusion.video_thresholds, None, shared)
        source = "fusion file"
        info = {"method": fusion.method, "file": path, "tuned_on": (fusion.tuned_on or {}).get("split")}
    if threshold is not None:
        thresholds = np.full(n, float(threshold))
        source = "--threshold"
        notes.append(f"one threshold {threshold:g} on every event (--threshold), not tuned")
    info["audio_weights"] = [float(w) for w in weights[shared]] if both else None
    info["fused_classes"] = names if both else []
    if both:
        fused = np.array(audio_windows, dtype=np.float64)
        fused[:, shared] = fuse(audio_windows[:, shared], video_windows[:, shared], weights[shared])
    elif has_audio:
        fused = np.array(audio_windows, dtype=np.float64)
    else:
        fused = np.nan_to_num(np.array(video_windows, dtype=np.float64), nan=0.0)
    return Decisions(fused, thresholds, audio_t, source, info, notes)


def above(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``probs >= thresholds`` with no decision where a threshold is NaN."""
    with np.errstate(invalid="ignore"):
        return np.asarray(probs >= thresholds) & np.isfinite(thresholds)
