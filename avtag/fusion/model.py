"""The :class:`FusionModel`: per-class weights and thresholds, where they came from, one JSON file.

Loading is strict (issue 10 items 7 and 10): the file is read with
:func:`avtag.validate.read_json` (no ``NaN``/``Infinity``), every field is checked for its JSON
type, weights and thresholds must be finite and lie in [0, 1], and any problem is one
:class:`~avtag.errors.InputFileError` line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import AvtagError, InputFileError
from avtag.events import event_names
from avtag.fusion.weights import RULE_HIGH_WEIGHT, fuse

FUSION_FORMAT = "avtag-fusion/1"
# 004 §3.4: the seven events on which the video branch beat the audio baseline.
PAPER_VIDEO_EVENTS = (
    "Ambulance (siren)",
    "Bicycle",
    "Bus",
    "Car passing by",
    "Fire engine, fire truck (siren)",
    "Skateboard",
    "Truck",
)
PAPER_DEFAULT_NOTE = (
    "paper-default fusion: untuned weights from 004 §3.4's list of the 7 events where video beat audio "
    "(video weight 0.8 on those, 0.2 elsewhere) and thresholds interpolated between the branches' own "
    "thresholds, not tuned; for calibrated decisions tune a fusion file on your validation data "
    "(avtag fusion fit) and pass it with --fusion"
)
_ARRAYS = ("audio_weights", "thresholds", "audio_thresholds", "video_thresholds")


@dataclass
class FusionModel:
    """Per-class fusion weights and thresholds, and where they came from.

    audio_weights:     w_c of 004 §2.3 (the video weight is ``1 - w_c``).
    thresholds:        class thresholds on the fused probabilities.
    audio_thresholds / video_thresholds: each branch's own thresholds, used when only one
                       branch can run on an input (e.g. a video without sound).
    method:            "search", "rule" or "paper-default".
    tuned_on:          {"split": name, "num_clips": n, "clip_ids": [...]} or None (untuned).
    sources:           {"audio": {...}, "video": {...}}: the models whose outputs were fused.
    validation:        micro-F1 / per-class F1 of each system on the tuning data.
    note:              a line for the user when the model is not what it may seem (untuned).
    """

    classes: list[str]
    audio_weights: np.ndarray
    thresholds: np.ndarray
    audio_thresholds: np.ndarray
    video_thresholds: np.ndarray
    method: str
    tuned_on: dict[str, Any] | None = None
    sources: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        for name in _ARRAYS:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (len(self.classes),):
                raise ValueError(f"{name} needs one value per class ({len(self.classes)}), got shape {value.shape}")
            if not np.all((value >= 0) & (value <= 1)):  # also refuses NaN
                raise ValueError(f"{name} must be finite and lie in [0, 1]")
            setattr(self, name, value)

    # -------------------------------------------------------------- applying

    @property
    def video_weights(self) -> np.ndarray:
        return 1.0 - self.audio_weights

    def fuse(self, audio_probs: np.ndarray | None, video_probs: np.ndarray | None) -> np.ndarray:
        """Fused probabilities; with one branch missing, that of the other branch."""
        if audio_probs is None and video_probs is None:
            raise ValueError("need the audio or the video probabilities")
        if video_probs is None:
            return np.asarray(audio_probs, dtype=np.float64)
        if audio_probs is None:
            return np.asarray(video_probs, dtype=np.float64)
        return fuse(audio_probs, video_probs, self.audio_weights)

    def thresholds_for(self, has_audio: bool, has_video: bool) -> np.ndarray:
        """The thresholds matching :meth:`fuse` for the branches that ran."""
        if has_audio and has_video:
            return self.thresholds
        if has_audio:
            return self.audio_thresholds
        if has_video:
            return self.video_thresholds
        raise ValueError("need at least one branch")

    def decide(self, audio_probs: np.ndarray | None, video_probs: np.ndarray | None) -> np.ndarray:
        """Binary decisions ``fused >= thresholds`` for the branches given."""
        fused = self.fuse(audio_probs, video_probs)
        return fused >= self.thresholds_for(audio_probs is not None, video_probs is not None)

    # -------------------------------------------------------------- guarding

    def check_reportable(self, split: str | None, clip_ids: Sequence[str] = ()) -> None:
        """Refuse to report on the data the weights/thresholds were tuned on.

        When the file records its tuning clip ids, refuses when any of ``clip_ids`` is among
        them, never on split names (a disjoint manifest also called "validation" is fine).
        Only a file without clip ids falls back to refusing its tuning ``split`` by name.
        Raises :class:`avtag.errors.AvtagError`.
        """
        if not self.tuned_on:
            return
        tuned_split = self.tuned_on.get("split")
        tuned_ids = self.tuned_on.get("clip_ids")
        if tuned_ids is None:
            if split is not None and tuned_split is not None and str(split) == str(tuned_split):
                raise AvtagError(f"the fusion weights and thresholds were tuned on split {tuned_split!r} (the file "
                                 "records no clip ids); report on another split")
            return
        tuned = set(tuned_ids)
        overlap = [c for c in clip_ids if c in tuned]
        if overlap:
            raise AvtagError(
                f"{len(overlap)} clips (first: {overlap[0]}) were used to tune the fusion weights and "
                f"thresholds (split {tuned_split!r}); report on held-out clips"
            )

    # -------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": FUSION_FORMAT,
            "method": self.method,
            "classes": self.classes,
            **{name: [float(x) for x in getattr(self, name)] for name in _ARRAYS},
            "tuned_on": self.tuned_on,
            "sources": self.sources,
            "validation": self.validation,
            "settings": self.settings,
        }
        if self.note is not None:
            data["note"] = self.note
        return data

    @classmethod
    def from_json(cls, data: Any) -> FusionModel:
        """A model from parsed JSON; a field of the wrong type or value raises ``ValueError``."""
        if not isinstance(data, dict) or data.get("format") != FUSION_FORMAT:
            raise ValueError(f"not an {FUSION_FORMAT} document")
        for key in ("method", "classes", *_ARRAYS):
            if key not in data:
                raise ValueError(f"field {key!r} is missing")
        classes = data["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError("'classes' must be a non-empty list of names")
        if len(set(classes)) != len(classes):
            raise ValueError("'classes' names a class twice")
        arrays = {}
        for name in _ARRAYS:
            value = data[name]
            if (not isinstance(value, list) or len(value) != len(classes)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"{name!r} must be a list of {len(classes)} numbers")
            array = np.asarray(value, dtype=np.float64)
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{name!r} holds a non-finite value")
            if np.any(array < 0) or np.any(array > 1):
                raise ValueError(f"{name!r} must lie in [0, 1]")
            arrays[name] = array
        if not isinstance(data["method"], str):
            raise ValueError("'method' must be a string")
        tuned_on = data.get("tuned_on")
        if tuned_on is not None:
            if not isinstance(tuned_on, dict):
                raise ValueError("'tuned_on' must be an object or null")
            if tuned_on.get("split") is not None and not isinstance(tuned_on["split"], str):
                raise ValueError("'tuned_on.split' must be a string")
            ids = tuned_on.get("clip_ids")
            if ids is not None and (not isinstance(ids, list) or not all(isinstance(c, str) for c in ids)):
                raise ValueError("'tuned_on.clip_ids' must be a list of clip ids")
        objects = {}
        for key in ("sources", "validation", "settings"):
            value = data.get(key) or {}
            if not isinstance(value, dict):
                raise ValueError(f"{key!r} must be an object")
            objects[key] = value
        for branch in ("audio", "video"):
            if objects["sources"].get(branch) is not None and not isinstance(objects["sources"][branch], dict):
                raise ValueError(f"'sources.{branch}' must be an object or null")
        note = data.get("note")
        if note is not None and not isinstance(note, str):
            raise ValueError("'note' must be a string")
        return cls(classes=classes, method=data["method"], tuned_on=tuned_on, note=note, **arrays, **objects)

    def save(self, path: str | Path) -> Path:
        """Write the model as one strict JSON file (atomically, :mod:`avtag.atomic`)."""
        from avtag.atomic import write_json

        return write_json(path, self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> FusionModel:
        """Read and check a fusion file for any class list; any problem is one :class:`InputFileError` line."""
        from avtag.validate import read_json

        path = Path(path)
        if not path.exists():
            raise InputFileError("no such fusion file", path)
        if path.is_dir():
            raise InputFileError("is a directory, not a fusion file", path)
        try:
            data = read_json(path, "an avtag fusion file")
        except InputFileError as err:  # keep one message family for every unreadable fusion file
            detail = str(err)[len(err.path) + 2:] if err.path else str(err)
            raise InputFileError(f"not a readable avtag fusion file: {detail}", path) from None
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError) as err:
            raise InputFileError(f"not a readable avtag fusion file ({err})", path) from None

    @classmethod
    def load(cls, path: str | Path, classes: Sequence[str] | None = None) -> FusionModel:
        """:meth:`read`, then ``classes`` (default: the 17 DCASE 2017 events) must be the file's class list."""
        model = cls.read(path)
        model.check_classes(classes, path)
        return model

    def check_classes(self, classes: Sequence[str] | None, path: str | Path | None = None) -> None:
        """One-line :class:`InputFileError` unless ``classes`` (default: the 17 DCASE events) are this model's."""
        expected = list(classes) if classes is not None else event_names()
        if self.classes != expected:
            raise InputFileError(f"fusion file is for other classes ({len(self.classes)} classes, expected the "
                                 f"{len(expected)} shared by the audio model and the video branch)", path)

    # -------------------------------------------------------------- construction

    @classmethod
    def paper_default(
        cls,
        audio_thresholds: Sequence[float],
        video_thresholds: Sequence[float],
        classes: Sequence[str] | None = None,
        sources: dict[str, Any] | None = None,
    ) -> FusionModel:
        """Untuned fusion with the weights published in 004 §3.4 (see :mod:`avtag.fusion`).

        Carries :data:`PAPER_DEFAULT_NOTE` in ``note`` for the user-facing outputs to print.
        """
        names = list(classes) if classes is not None else event_names()
        weights = np.array([round(1.0 - RULE_HIGH_WEIGHT, 12) if n in PAPER_VIDEO_EVENTS else RULE_HIGH_WEIGHT
                            for n in names])
        audio_t = np.asarray(audio_thresholds, dtype=np.float64)
        video_t = np.asarray(video_thresholds, dtype=np.float64)
        return cls(
            classes=names,
            audio_weights=weights,
            thresholds=weights * audio_t + (1.0 - weights) * video_t,
            audio_thresholds=audio_t,
            video_thresholds=video_t,
            method="paper-default",
            sources=dict(sources or {}),
            note=PAPER_DEFAULT_NOTE,
        )
