"""The 17 DCASE 2017 Task 4 sound events, in the official order.

The table lives in ``data_manifests/dcase17_events.csv`` (installed as
``avtag.manifests``): display name, AudioSet MID and a short plain-English description
used by the video branch to map recognised objects to events with word vectors.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources


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
