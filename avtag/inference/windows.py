"""Window arithmetic shared by ``avtag run`` and batch evaluation: where analysis windows start,
which of their frames are real (not padding), how frame outputs merge onto one timeline, and
how frames above a threshold become time ranges.

Our documented choices (no paper describes tagging files longer than one clip):

* Windows are the model's clip length, hop = half a window. A file at most
  ``CROP_TOLERANCE_SECONDS`` (0.5 s) longer than one window is ONE window: DCASE and AudioSet
  clips are "10 s" give or take a few frames, and the few extra frames are cropped (the plan
  says how much, so the output can note it).
* Otherwise windows start at 0, hop, 2·hop, ... while the file extends more than the tolerance
  past the previous window's end. When the last grid window would run past the end of the file,
  one window aligned to the end of the file replaces it (or replaces the last two, when the
  end-aligned window is less than a hop after the second-to-last), so that no two windows
  start less than a hop apart and none is more than half padding. Only a file shorter than
  one window plus a hop keeps a padded second window (starting one hop in).
* A window shorter than the clip (the file is short, or the last window runs past the end) is
  padded by the front-end; :attr:`WindowPlan.valid_seconds` says how much of each window is
  real, so padded frames never count for decisions or time ranges.
* Frame-level outputs of overlapping windows merge by the per-frame maximum (the MIL "any
  instance" rule of 004 §2.1), on one timeline at the model's frame hop.
* Time ranges: frames at or above the class threshold, merged into runs; gaps of at most
  ``MIN_GAP_SECONDS`` (0.3 s) are bridged; a run is [start of first frame, end of last frame].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CROP_TOLERANCE_SECONDS = 0.5
MIN_GAP_SECONDS = 0.3
_EPS = 1e-6


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one file lie."""

    duration: float  # seconds of real signal in the file
    window: float  # seconds per window (the model's clip length)
    hop: float
    starts: tuple[float, ...]

    @property
    def valid_seconds(self) -> tuple[float, ...]:
        """Seconds of real signal in each window (the rest is padding or cropped away)."""
        return tuple(round(float(max(0.0, min(self.window, self.duration - s))), 6) for s in self.starts)

    @property
    def cropped_seconds(self) -> float:
        """Seconds at the end of the file that no window covers (at most the tolerance)."""
        return round(max(0.0, self.duration - (self.starts[-1] + self.window)), 6)

    @property
    def padded_seconds(self) -> float:
        """Seconds of padding in the last window (a short file, or a last window past the end)."""
        return round(max(0.0, self.window - self.valid_seconds[-1]), 6)


def plan_windows(duration: float, window: float, hop: float | None = None,
                 crop_tolerance: float = CROP_TOLERANCE_SECONDS) -> WindowPlan:
    """The analysis windows of a file of ``duration`` seconds (see the module docstring)."""
    if window <= 0:
        raise ValueError("window must be positive")
    hop = window / 2.0 if hop is None else float(hop)
    if hop <= 0:
        raise ValueError("hop must be positive")
    duration = max(0.0, float(duration))
    if duration <= window + crop_tolerance + _EPS:
        return WindowPlan(duration, window, hop, (0.0,))
    starts = [0.0]
    while starts[-1] + window < duration - crop_tolerance - _EPS:
        starts.append(starts[-1] + hop)
    end_aligned = duration - window
    if starts[-1] + window > duration + _EPS:  # the last grid window runs past the end
        if len(starts) >= 3 and end_aligned >= starts[-3] + hop - _EPS:
            starts[-2:] = [end_aligned]  # one end-aligned window replaces the last two
        elif end_aligned >= starts[-2] + hop - _EPS:
            starts[-1] = end_aligned
    return WindowPlan(duration, window, hop, tuple(round(s, 6) for s in starts))


def window_starts(duration: float, window: float, hop: float | None = None) -> list[float]:
    """Start times of the analysis windows (:func:`plan_windows`)."""
    return list(plan_windows(duration, window, hop).starts)


def valid_frames(valid_seconds: float, frame_hop: float, total_frames: int) -> int:
    """How many of a window's ``total_frames`` output frames lie (mostly) in real signal."""
    return int(min(total_frames, max(1, math.ceil(valid_seconds / frame_hop - 0.5 - _EPS))))


def merge_window_frames(frame_probs: Sequence[np.ndarray], starts: Sequence[float], frame_hop: float,
                        duration: float) -> np.ndarray:
    """Max-merge per-window frame probabilities ``(T', C)`` onto one timeline at ``frame_hop``,
    keeping only frames inside the file."""
    total = max(1, int(math.ceil(duration / frame_hop - _EPS)))
    merged = np.zeros((total, frame_probs[0].shape[1]))
    for probs, start in zip(frame_probs, starts, strict=True):
        offset = int(round(start / frame_hop))
        count = min(len(probs), total - offset)
        if count > 0:
            merged[offset:offset + count] = np.maximum(merged[offset:offset + count], probs[:count])
    return merged


def active_ranges(active: np.ndarray, frame_hop: float, min_gap: float = MIN_GAP_SECONDS) -> list[tuple[float, float]]:
    """Runs of ``active`` frames as (onset, offset) seconds, bridging gaps of ``<= min_gap``."""
    padded = np.concatenate([[False], np.asarray(active, dtype=bool), [False]])
    change = np.diff(padded.astype(np.int8))
    onsets, offsets = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    ranges: list[list[float]] = []
    for on, off in zip(onsets, offsets, strict=True):
        start, end = on * frame_hop, off * frame_hop
        if ranges and start - ranges[-1][1] <= min_gap + 1e-9:
            ranges[-1][1] = end
        else:
            ranges.append([start, end])
    return [(round(float(a), 3), round(float(b), 3)) for a, b in ranges]


def event_time_ranges(frame_probs: np.ndarray, frame_hop: float, thresholds: np.ndarray, events: Sequence[int],
                      classes: Sequence[str], duration: float) -> dict[str, list[tuple[float, float]]]:
    """Time ranges of ``events`` from merged frame probabilities, clipped to the file."""
    ranges = {}
    for c in events:
        spans = active_ranges(frame_probs[:, c] >= thresholds[c], frame_hop)
        ranges[classes[c]] = [(a, min(b, float(duration))) for a, b in spans if a < duration]
    return ranges
