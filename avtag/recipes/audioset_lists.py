"""AudioSet segment lists (``balanced_train_segments.csv`` ...) parsed into compact columns.

Segment lists (one streaming pass, no step quadratic in the 2,041,789 segments of the
unbalanced list): the official layout (``#`` comment lines, ``, ``-separated fields, quoted
MID lists: ``--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"``) and the re-saved variants
people have (comment lines dropped, no spaces, integer seconds, unquoted single MIDs). When
the official header states ``num_segs`` / ``num_positive_labels`` the parse is checked
against them. MIDs map to columns through ``class_labels_indices.csv`` (527 classes); an
unknown MID is counted per split in the report and listed in ``unknown_mids.csv``, never
dropped silently.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from avtag.data.dcase17 import YOUTUBE_ID_LENGTH, clip_id
from avtag.errors import InputFileError

LIST_FILES: dict[str, str] = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
_HEADER_COUNT = re.compile(r"(num_segs|num_positive_labels)=(\d+)")


@dataclass
class SegmentList:
    """The segments of one list, compactly: ids, times, label columns, unknown MIDs."""

    path: Path
    keys: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    columns: list[tuple[int, ...]] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (clip id, MID)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_labels(self) -> int:
        return sum(map(len, self.columns)) + len(self.unknown)


def read_segments(path: str | Path, mid_to_column: dict[str, int]) -> SegmentList:
    """Parse an AudioSet segment list in either layout (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such segment list", path)
    started = time.perf_counter()
    segments = SegmentList(path)
    stated: dict[str, int] = {}
    seen: set[str] = set()
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                stated.update((name, int(value)) for name, value in _HEADER_COUNT.findall(line))
                continue
            fields = line.split(",", 3)
            if len(fields) != 4:
                raise InputFileError(f"line {lineno}: expected YTID, start, end, labels; got {line[:80]!r}", path)
            youtube_id, start_text, end_text, label_text = (text.strip() for text in fields)
            if youtube_id == "YTID":  # a header row without its '#'
                continue
            try:
                start, end = float(start_text), float(end_text)
            except ValueError:
                raise InputFileError(f"line {lineno}: bad start/end {start_text!r}/{end_text!r}", path) from None
            if len(youtube_id) != YOUTUBE_ID_LENGTH or not end > start:
                raise InputFileError(f"line {lineno}: {youtube_id!r} {start_text}-{end_text} is not an 11-character id and a time span", path)
            if label_text.startswith('"'):
                if not label_text.endswith('"') or len(label_text) < 2:
                    raise InputFileError(f"line {lineno}: unterminated quoted label list", path)
                label_text = label_text[1:-1]
            key = clip_id(youtube_id, start, end)
            if key in seen:
                raise InputFileError(f"line {lineno}: segment {key} listed twice", path)
            seen.add(key)
            columns = []
            for mid in label_text.split(","):
                mid = mid.strip()
                if not mid:
                    continue
                column = mid_to_column.get(mid)
                if column is None:
                    segments.unknown.append((key, mid))
                else:
                    columns.append(column)
            segments.keys.append(key)
            segments.starts.append(start)
            segments.ends.append(end)
            segments.columns.append(tuple(sorted(set(columns))))
    segments.seconds = time.perf_counter() - started
    if not segments.keys:
        raise InputFileError("segment list has no segments", path)
    if "num_segs" in stated and stated["num_segs"] != len(segments):
        raise InputFileError(f"header states {stated['num_segs']} segments, parsed {len(segments)}", path)
    if "num_positive_labels" in stated and stated["num_positive_labels"] != segments.num_labels:
        raise InputFileError(f"header states {stated['num_positive_labels']} labels, parsed {segments.num_labels}", path)
    return segments


__all__ = ["LIST_FILES", "SegmentList", "read_segments"]
