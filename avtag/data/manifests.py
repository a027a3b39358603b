"""Typed clip manifests (JSON Lines), the one data format every avtag tool reads.

One line per clip::

    {"id": "Y-5QrBL6MzLg_60.000_70.000", "labels": ["Train horn", "Train"],
     "audio": "audio/Y-5QrBL6MzLg_60.000_70.000.wav",      # or null
     "video": null,                                         # optional video file
     "pack": "train.h5", "pack_key": "Y-5QrBL6MzLg_60.000_70.000",  # optional HDF5 pack
     "start": 60.0, "end": 70.0, "duration": 10.0, "split": "test",
     "events": [{"label": "Train horn", "onset": 0.917, "offset": 2.029}]}

Relative paths are resolved against the manifest file's directory. ``labels`` are the
clip-level (weak) labels; ``events`` are optional strong labels (onset/offset seconds
inside the clip) used for localisation scoring. Unknown keys are kept in ``extra``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avtag.errors import ManifestError


@dataclass(frozen=True)
class EventSpan:
    """A strongly-labelled event occurrence inside a clip (seconds from clip start)."""

    label: str
    onset: float
    offset: float


@dataclass
class ClipRecord:
    """One clip of a manifest."""

    id: str
    labels: list[str] = field(default_factory=list)
    audio: str | None = None
    video: str | None = None
    pack: str | None = None
    pack_key: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    split: str | None = None
    events: list[EventSpan] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("extra", "events")}
        data = {k: v for k, v in data.items() if v is not None}
        if self.events:
            data["events"] = [asdict(e) for e in self.events]
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClipRecord:
        known = {f for f in cls.__dataclass_fields__ if f not in ("extra", "events")}
        kwargs = {k: data[k] for k in known if k in data}
        if "id" not in kwargs:
            raise ValueError("record without 'id'")
        kwargs["labels"] = list(kwargs.get("labels") or [])
        events = [EventSpan(str(e["label"]), float(e["onset"]), float(e["offset"])) for e in data.get("events") or []]
        extra = {k: v for k, v in data.items() if k not in known and k != "events"}
        return cls(**kwargs, events=events, extra=extra)


def resolve(base: Path, path: str | None) -> Path | None:
    """Resolve a manifest-relative path."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def write_manifest(records: Iterable[ClipRecord], path: str | Path) -> Path:
    """Write records as JSON Lines (atomically: a temp file renamed into place)."""
    from avtag.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as fh:
        for record in records:
            fh.write(json.dumps(record.to_json(), ensure_ascii=False, allow_nan=False) + "\n")
    return path


def iter_manifest(path: str | Path) -> Iterator[ClipRecord]:
    """Yield the records of a JSON Lines manifest; a bad line is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError("no such manifest", path)
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield ClipRecord.from_json(json.loads(line))
            except (ValueError, TypeError, KeyError) as err:
                raise ManifestError(f"line {lineno}: {err}", path) from None


def read_manifest(path: str | Path) -> list[ClipRecord]:
    """All records of a manifest."""
    records = list(iter_manifest(path))
    if not records:
        raise ManifestError("manifest has no clips", path)
    return records
