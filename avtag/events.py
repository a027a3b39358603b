"""The 17 DCASE 2017 Task 4 sound events, in the official order, and event descriptions.

The table lives in ``data_manifests/dcase17_events.csv`` (installed as
``avtag.manifests``): display name, AudioSet MID and a short plain-English description
used by the video branch to map recognised objects to events with word vectors.

Those descriptions were written by hand for this project, in ImageNet-like vocabulary
("minibus", "forklift"), which partly tunes the mapping: they are the documented offline
default (``event_descriptions: manifest``). The AudioSet ontology's own descriptions are the
alternative (``event_descriptions: ontology``), read from a user's ``ontology.json`` (never
shipped). :func:`describe_events` gives names and descriptions for any event list.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Union

from avtag.errors import InputFileError, check_input_file


@dataclass(frozen=True)
class Event:
    index: int
    name: str
    mid: str
    description: str


@functools.cache
def dcase17_events() -> tuple[Event, ...]:
    """The 17 events in the order of the official class list."""
    text = resources.files("avtag.manifests").joinpath("dcase17_events.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    events = tuple(
        Event(int(r["index"]), r["name"], r["mid"], r["description"]) for r in rows
    )
    assert [e.index for e in events] == list(range(len(events)))
    return events


def event_names() -> list[str]:
    """Display names of the 17 events (the labels used in the official files)."""
    return [e.name for e in dcase17_events()]


def event_index() -> dict[str, int]:
    """Map from display name to column index."""
    return {e.name: e.index for e in dcase17_events()}


NUM_EVENTS = 17


# ---------------------------------------------------------------------------------------------
# Event descriptions for the video branch's mapping (004 §2.2.2) from any event list
# ---------------------------------------------------------------------------------------------

DescriptionSource = Literal["manifest", "ontology"]


@dataclass(frozen=True)
class EventDescription:
    """One event the video branch maps objects to: its name, the text that is embedded, and
    where that text came from (``user``, ``manifest``, ``ontology`` or ``name``)."""

    name: str
    description: str
    source: str


@dataclass(frozen=True)
class OntologyEntry:
    mid: str
    name: str
    description: str


def _normalise(label: str) -> str:
    """A label for matching: lowercase, ``_``/``-`` as spaces, single spaces."""
    return " ".join(re.sub(r"[_\-]+", " ", label.lower()).split())


@functools.lru_cache(maxsize=4)
def _read_ontology_cached(path: str, size: int, mtime_ns: int) -> tuple[OntologyEntry, ...]:
    from avtag.validate import read_json

    data = read_json(path, "the AudioSet ontology.json")
    if not isinstance(data, list) or not data:
        raise InputFileError("expected the AudioSet ontology (a JSON list of classes)", path)
    entries = []
    for item in data:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) for key in ("id", "name", "description")
        ):
            raise InputFileError("an ontology entry lacks a string id, name or description", path)
        entries.append(OntologyEntry(item["id"], item["name"], item["description"].strip()))
    return tuple(entries)


def read_ontology(path: str | Path) -> tuple[OntologyEntry, ...]:
    """The classes of a user's AudioSet ``ontology.json`` (id, name, description), cached."""
    path = check_input_file(path, "the AudioSet ontology.json")
    stat = path.stat()
    return _read_ontology_cached(str(path), stat.st_size, stat.st_mtime_ns)


def ontology_lookup(entries: Sequence[OntologyEntry], label: str, mid: str | None = None
                    ) -> OntologyEntry | None:
    """The ontology class of ``label``: by MID when given, else by its name, else by one of the
    comma-separated aliases of a name ("car horn" in "Vehicle horn, car horn, honking")."""
    if mid:
        for entry in entries:
            if entry.mid == mid:
                return entry
    wanted = _normalise(label)
    for entry in entries:
        if _normalise(entry.name) == wanted:
            return entry
    for entry in entries:
        if wanted in (_normalise(alias) for alias in entry.name.split(",")):
            return entry
    return None


def ontology_text(entry: OntologyEntry) -> str:
    """What is embedded for an ontology class: ``"<name>: <description>"`` (our documented
    choice, the same shape as the manifest's lines)."""
    return f"{entry.name}: {entry.description}"


EventSpec = Union[str, tuple[str, str], EventDescription, Event]


def describe_events(
    events: Sequence[EventSpec] | None = None,
    source: DescriptionSource = "manifest",
    ontology_path: str | Path | None = None,
) -> list[EventDescription]:
    """Names and descriptions of the events the video branch maps to (any event list).

    ``events``: names, ``(name, description)`` pairs, :class:`Event` or
    :class:`EventDescription` items; ``None`` means the 17 DCASE 2017 events. A description
    given by the user is used as given. Otherwise, with ``source="manifest"`` (the offline
    default) a DCASE event gets its line of ``data_manifests/dcase17_events.csv``; with
    ``source="ontology"`` every event gets its class's description from the user's AudioSet
    ``ontology.json`` (matched by MID for DCASE events, else by name or alias; ``ontology_path``
    required). An event found in neither is described by its own name (``source="name"``),
    so any class list works, e.g. ESC-50's ``car_horn`` or ``crackling_fire``.
    """
    if source not in ("manifest", "ontology"):
        raise ValueError(f"unknown event description source {source!r} (manifest, ontology)")
    if source == "ontology" and ontology_path is None:
        raise InputFileError("event_descriptions 'ontology' needs ontology_path "
                             "(the AudioSet ontology.json)")
    ontology = read_ontology(ontology_path) if ontology_path is not None else None
    dcase = {e.name: e for e in dcase17_events()}
    items = list(dcase17_events()) if events is None else list(events)
    if not items:
        raise ValueError("the event list is empty")
    out: list[EventDescription] = []
    for item in items:
        if isinstance(item, EventDescription):
            out.append(item)
            continue
        if isinstance(item, tuple):
            name, text = item
            if not isinstance(name, str) or not isinstance(text, str) or not name.strip():
                raise ValueError(f"an event must be a name or (name, description), got {item!r}")
            out.append(EventDescription(name, text.strip() or name, "user"))
            continue
        name = item.name if isinstance(item, Event) else item
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an event name must be a non-empty string, got {name!r}")
        known = dcase.get(name)
        if source == "manifest" and known is not None:
            out.append(EventDescription(name, known.description, "manifest"))
            continue
        entry = None if ontology is None else ontology_lookup(
            ontology, name, None if known is None else known.mid)
        if entry is not None:
            out.append(EventDescription(name, ontology_text(entry), "ontology"))
        else:
            out.append(EventDescription(name, re.sub(r"[_\-]+", " ", name), "name"))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ValueError("the event list names an event twice")
    return out


# ---------------------------------------------------------------------------------------------
# An event file: the event list of the video branch for ``--video-events``
# ---------------------------------------------------------------------------------------------

EVENT_FILE_COLUMNS = ("name", "description")


def read_event_file(path: str | Path) -> list[EventDescription]:
    """The events of an event file (``--video-events``): a UTF-8 CSV with the header
    ``name,description`` and one event per row, in output order.

    An empty description means "describe it as :func:`describe_events` would" (the manifest's
    line for a DCASE event, else the name in plain words). Anything else wrong (no header, a
    blank or repeated name, a row of the wrong width, no event) is one
    :class:`~avtag.errors.InputFileError` naming the file.
    """
    path = check_input_file(path, "an event file (CSV: name,description)")
    try:
        text = path.read_text(encoding="utf-8")
        rows = list(csv.reader(text.splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(f"not a readable event file ({type(err).__name__})", path) from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows or tuple(cell.strip().lower() for cell in rows[0]) != EVENT_FILE_COLUMNS:
        raise InputFileError("not an event file: the first line must be the header 'name,description'", path)
    if len(rows) == 1:
        raise InputFileError("the event file lists no event", path)
    items: list[EventSpec] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise InputFileError(f"row {line} has {len(row)} fields, expected 2 (name,description)", path)
        name, description = row[0].strip(), row[1].strip()
        if not name:
            raise InputFileError(f"row {line} has no event name", path)
        items.append((name, description) if description else name)
    names = [item[0] if isinstance(item, tuple) else item for item in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputFileError(f"the event file names {repeated[0]!r} twice", path)
    return describe_events(items)


def write_event_file(path: str | Path, events: Sequence[EventDescription]) -> Path:
    """Write ``events`` as an event file (:func:`read_event_file`), atomically."""
    import io

    from avtag.atomic import write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EVENT_FILE_COLUMNS)
    for event in events:
        writer.writerow([event.name, event.description])
    return write_text(path, buffer.getvalue())
