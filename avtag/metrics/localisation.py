"""Segment-based localisation F1 of frame probabilities against strong labels.

Choice where the papers are silent:

* Segment-based localisation F1 follows sed_eval's segment-based metric: 1 s segments, an event
  marks segments ``floor(onset / 1 s)`` to ``ceil(offset / 1 s)``; estimated events are runs of
  frames at or above the class threshold; counts are summed over classes and segments (micro).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avtag.data.manifests import EventSpan
from avtag.metrics.subtask_a import ClassScores


@dataclass(frozen=True)
class SegmentScores(ClassScores):
    """Segment-based counts (micro over classes) and the derived scores."""


def _span_segments(onset: float, offset: float, segment: float, num_segments: int) -> slice:
    first = int(math.floor(onset / segment + 1e-9))
    last = int(math.ceil(offset / segment - 1e-9))
    return slice(max(first, 0), min(max(last, first + 1), num_segments))


def frames_to_events(
    active: np.ndarray, frame_hop: float, classes: Sequence[str]
) -> list[EventSpan]:
    """Runs of active frames ``(T', C)`` as events; frame ``t`` covers ``[t*hop, (t+1)*hop)``."""
    events = []
    active = np.asarray(active, dtype=bool)
    padded = np.zeros((active.shape[0] + 2, active.shape[1]), dtype=np.int8)
    padded[1:-1] = active
    change = np.diff(padded, axis=0)
    for c, name in enumerate(classes):
        starts = np.flatnonzero(change[:, c] == 1)
        stops = np.flatnonzero(change[:, c] == -1)
        events.extend(EventSpan(name, s * frame_hop, e * frame_hop) for s, e in zip(starts, stops, strict=True))
    return events


def segment_based_f1(
    frame_probs: Sequence[np.ndarray] | np.ndarray,
    frame_hop: float,
    thresholds: Sequence[float] | np.ndarray,
    events: Sequence[Sequence[EventSpan]],
    classes: Sequence[str],
    segment_length: float = 1.0,
    clip_durations: Sequence[float] | None = None,
) -> SegmentScores:
    """Segment-based localisation F1 (sed_eval style, micro over classes) over a set of clips.

    ``frame_probs[i]`` is clip i's ``(T', C)`` frame probabilities, one frame per ``frame_hop``
    seconds; a frame is active where its probability is ``>= thresholds[c]``. ``events[i]`` are
    the true spans (labels outside ``classes`` are ignored). A clip spans
    ``clip_durations[i]`` seconds (default ``T' * frame_hop``, extended to the last event).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    index = {name: c for c, name in enumerate(classes)}
    if len(frame_probs) != len(events):
        raise ValueError(f"{len(frame_probs)} clips of frame probabilities but {len(events)} event lists")
    tp = fp = fn = 0
    for i, (probs, truth) in enumerate(zip(frame_probs, events, strict=True)):
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != len(classes):
            raise ValueError(f"clip {i}: frame probabilities must be (T', {len(classes)}), got {probs.shape}")
        estimated = frames_to_events(probs >= thresholds, frame_hop, classes)
        duration = clip_durations[i] if clip_durations is not None else probs.shape[0] * frame_hop
        end = max([duration] + [e.offset for e in truth if e.label in index])
        num_segments = max(1, int(math.ceil(end / segment_length - 1e-9)))
        reference_roll = np.zeros((num_segments, len(classes)), dtype=bool)
        estimated_roll = np.zeros_like(reference_roll)
        for roll, spans in ((reference_roll, truth), (estimated_roll, estimated)):
            for span in spans:
                if span.label in index and span.offset > span.onset:
                    roll[_span_segments(span.onset, span.offset, segment_length, num_segments), index[span.label]] = True
        tp += int(np.sum(reference_roll & estimated_roll))
        fp += int(np.sum(~reference_roll & estimated_roll))
        fn += int(np.sum(reference_roll & ~estimated_roll))
    return SegmentScores(tp, fp, fn)


__all__ = ["SegmentScores", "frames_to_events", "segment_based_f1"]
