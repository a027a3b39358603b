"""What ``avtag run`` found in one file: the result types and their strict-JSON form.

:class:`AnalysisResult` holds the whole-file and per-window probabilities over the *model's*
class list (an audio checkpoint's own classes, or the video branch's events when only the video
branch runs), the thresholds and where they came from, the key frames, the video evidence and
the notes. ``to_json`` writes only JSON values (a probability a branch could not give, or a
threshold that does not exist, is ``null``, never ``NaN``); ``from_json`` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESULT_FORMAT = "avtag-run/2"


def vector_to_json(values: np.ndarray | None) -> list[float | None] | None:
    """Floats, with ``None`` for NaN (a value that does not exist)."""
    if values is None:
        return None
    return [None if not math.isfinite(float(v)) else float(v) for v in np.asarray(values, dtype=np.float64)]


def vector_from_json(values: list | None) -> np.ndarray | None:
    if values is None:
        return None
    return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)


@dataclass
class KeyFrame:
    """A key frame of one window, with its top recognised objects."""

    time: float
    window: int
    objects: list[tuple[str, float]]
    image: np.ndarray | None = None  # RGB uint8, for reports; not in JSON


@dataclass
class EvidenceObject:
    """A recognised object that gave its probability to an event (004 §2.2.2 mapping)."""

    name: str
    probability: float
    similarity: float
    keyframe_times: list[float]


@dataclass
class VideoEvidence:
    """One of the video branch's most likely events, and the objects that led to it.

    Video scores are uncalibrated: under the top-1 object-to-event mapping of 004 §2.2.2 the
    event scores of a window sum to about one, so they rank events rather than decide them.
    """

    event: str
    probability: float
    window: int
    objects: list[EvidenceObject]


@dataclass
class WindowTags:
    """Tags of one analysis window ``[start, end)`` (seconds) over the result's classes."""

    start: float
    end: float
    valid_seconds: float  # real signal in the window (the rest is padding)
    audio_probs: np.ndarray | None
    video_probs: np.ndarray | None  # NaN for classes the video branch does not cover
    fused_probs: np.ndarray
    detected: list[str]


@dataclass
class AnalysisResult:
    """Everything :func:`avtag.inference.pipeline.analyse` found; ``to_json``/``from_json`` round-trip."""

    input: str
    audio_input: str | None
    mode: str  # "audio+video", "video", "audio"
    duration: float
    classes: list[str]
    audio_probs: np.ndarray | None
    video_probs: np.ndarray | None  # NaN for classes the video branch does not cover
    fused_probs: np.ndarray
    thresholds: np.ndarray  # NaN where no calibrated threshold exists
    detected: np.ndarray
    threshold_source: str
    fusion: dict[str, Any]
    window_seconds: float
    window_hop: float
    windows: list[WindowTags]
    keyframes: list[KeyFrame]
    frame_hop: float | None
    frame_probs: np.ndarray | None
    audio_thresholds: np.ndarray | None
    time_ranges: dict[str, list[tuple[float, float]]]
    video_classes: list[str] = field(default_factory=list)  # classes the video branch scored
    video_evidence: list[VideoEvidence] = field(default_factory=list)
    top_k: int = 3
    padded_seconds: float = 0.0
    cropped_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    spectrogram: np.ndarray | None = None  # (frames, n_mels), for reports; not in JSON
    spectrogram_hop: float | None = None
    waveform: np.ndarray | None = None  # mono sound track, for the report's audio player; not in JSON
    sample_rate: int | None = None

    @property
    def detected_events(self) -> list[str]:
        return [name for name, d in zip(self.classes, self.detected) if d]

    @property
    def calibrated(self) -> bool:
        """Whether the decisions rest on thresholds (tuned, given, or the paper's default)."""
        return bool(np.isfinite(self.thresholds).any())

    def ranking(self) -> list[int]:
        """Class indices, most probable (fused) first; ties keep the class order."""
        return [int(i) for i in np.argsort(-np.nan_to_num(self.fused_probs, nan=-1.0), kind="stable")]

    def to_json(self) -> dict[str, Any]:
        vec = vector_to_json
        return {
            "format": RESULT_FORMAT,
            "input": self.input,
            "audio_input": self.audio_input,
            "mode": self.mode,
            "duration": float(self.duration),
            "classes": list(self.classes),
            "video_classes": list(self.video_classes),
            "audio_probs": vec(self.audio_probs),
            "video_probs": vec(self.video_probs),
            "fused_probs": vec(self.fused_probs),
            "thresholds": vec(self.thresholds),
            "threshold_source": self.threshold_source,
            "detected": [bool(d) for d in self.detected],
            "detected_events": self.detected_events,
            "ranking": [self.classes[i] for i in self.ranking()],
            "top_k": int(self.top_k),
            "fusion": self.fusion,
            "window_seconds": float(self.window_seconds),
            "window_hop": float(self.window_hop),
            "padded_seconds": float(self.padded_seconds),
            "cropped_seconds": float(self.cropped_seconds),
            "windows": [
                {"start": w.start, "end": w.end, "valid_seconds": w.valid_seconds, "audio_probs": vec(w.audio_probs),
                 "video_probs": vec(w.video_probs), "fused_probs": vec(w.fused_probs), "detected": list(w.detected)}
                for w in self.windows
            ],
            "keyframes": [
                {"time": k.time, "window": k.window, "objects": [[name, float(p)] for name, p in k.objects]}
                for k in self.keyframes
            ],
            "video_evidence": [
                {"event": e.event, "probability": float(e.probability), "window": e.window,
                 "objects": [{"name": o.name, "probability": float(o.probability), "similarity": float(o.similarity),
                              "keyframe_times": [float(t) for t in o.keyframe_times]} for o in e.objects]}
                for e in self.video_evidence
            ],
            "frame_hop": self.frame_hop,
            "frame_probs": None if self.frame_probs is None else np.asarray(self.frame_probs, dtype=float).tolist(),
            "audio_thresholds": vec(self.audio_thresholds),
            "time_ranges": {k: [[float(a), float(b)] for a, b in v] for k, v in self.time_ranges.items()},
            "notes": list(self.notes),
            "models": self.models,
            "timings": {k: float(v) for k, v in self.timings.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnalysisResult:
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise ValueError(f"not an {RESULT_FORMAT} document")
        vec = vector_from_json
        return cls(
            input=data["input"],
            audio_input=data["audio_input"],
            mode=data["mode"],
            duration=data["duration"],
            classes=list(data["classes"]),
            video_classes=list(data["video_classes"]),
            audio_probs=vec(data["audio_probs"]),
            video_probs=vec(data["video_probs"]),
            fused_probs=vec(data["fused_probs"]),
            thresholds=vec(data["thresholds"]),
            threshold_source=data["threshold_source"],
            detected=np.asarray(data["detected"], dtype=bool),
            top_k=data["top_k"],
            fusion=data["fusion"],
            window_seconds=data["window_seconds"],
            window_hop=data["window_hop"],
            padded_seconds=data["padded_seconds"],
            cropped_seconds=data["cropped_seconds"],
            windows=[
                WindowTags(w["start"], w["end"], w["valid_seconds"], vec(w["audio_probs"]), vec(w["video_probs"]),
                           vec(w["fused_probs"]), list(w["detected"]))
                for w in data["windows"]
            ],
            keyframes=[KeyFrame(k["time"], k["window"], [(n, p) for n, p in k["objects"]]) for k in data["keyframes"]],
            video_evidence=[
                VideoEvidence(e["event"], e["probability"], e["window"],
                              [EvidenceObject(o["name"], o["probability"], o["similarity"], list(o["keyframe_times"]))
                               for o in e["objects"]])
                for e in data["video_evidence"]
            ],
            frame_hop=data["frame_hop"],
            frame_probs=None if data["frame_probs"] is None else np.asarray(data["frame_probs"], dtype=np.float64),
            audio_thresholds=vec(data["audio_thresholds"]),
            time_ranges={k: [(a, b) for a, b in v] for k, v in data["time_ranges"].items()},
            notes=list(data["notes"]),
            models=data["models"],
            timings=data["timings"],
        )
