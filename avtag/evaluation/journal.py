"""The crash-safe per-clip journal of batch evaluation (``results.jsonl``).

One strict JSON line per clip (branch probabilities, or why it failed), appended with flush +
fsync, so a killed run loses at most the line being written; :func:`read_journal` cuts a torn
last line off. This append-only file is the one output not written by rename: appending is
what makes it crash-safe (every other file goes through :mod:`avtag.atomic`).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from avtag.atomic import dumps_json

JOURNAL = "results.jsonl"
KILL_HOOK = "AVTAG_EVAL_KILL_AFTER"  # test hook: SIGKILL the process after appending N clips


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def read_journal(path: str | Path) -> dict[str, dict[str, Any]]:
    """Entries by clip id; a torn or invalid line (killed mid-write) and all after it are cut off."""
    path = Path(path)
    entries: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return entries
    good_bytes = 0
    with path.open("rb") as fh:
        for raw in fh:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn line")
                entry = json.loads(raw, parse_constant=_refuse_constant)
                if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                    raise ValueError("not a journal entry")
            except ValueError:
                break
            entries[entry["id"]] = entry
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as fh:
            fh.truncate(good_bytes)
    return entries


class Journal:
    """Append-only JSON Lines file, flushed and fsynced per clip."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.handle = self.path.open("a", encoding="utf-8")
        self.appended = 0
        self.kill_after = int(os.environ.get(KILL_HOOK, "0") or 0)

    def append(self, entry: dict[str, Any]) -> None:
        self.handle.write(dumps_json(entry, indent=None) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.appended += 1
        if self.kill_after and self.appended >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: die like a crash would

    def close(self) -> None:
        self.handle.close()
