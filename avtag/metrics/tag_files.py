"""The DCASE 2017 Task 4 prediction / ground-truth file (``file<TAB>start<TAB>end<TAB>label``).

Prediction file format (:func:`write_tag_file`, :func:`read_tag_file`): one row per tag,
``file<TAB>start<TAB>end<TAB>label``, where ``file`` is the organisers' spelling
(``-5QrBL6MzLg_60.000_70.000.wav``) and start/end are the clip's times in its source video. A
clip with no tag is written as a row holding only its file name, as in the organisers'
``prediction_missing.csv`` fixture; the official scorer reads it as "no labels". As in the
official reader, a 4-column row whose end time is 0 is a "not audible" row and carries no tag.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from avtag.atomic import write_text
from avtag.data.dcase17 import clip_id, official_file_name, parse_clip_id
from avtag.errors import InputFileError


def _strip_audio_extension(name: str) -> str:
    """The official reader's file key: the name up to ``.wav`` / ``.flac``."""
    return name.split(".wav")[0].split(".flac")[0].strip()


def match_key(name: str, official: bool) -> str:
    if official:
        return _strip_audio_extension(name)
    parsed = parse_clip_id(name)
    if parsed is None:
        return _strip_audio_extension(os.path.basename(name.strip()))
    return clip_id(*parsed)


def read_tag_file(path: str | Path, official: bool = False) -> dict[str, list[str]]:
    """Clip -> predicted (or ground-truth) labels of a ``file<TAB>start<TAB>end<TAB>label`` file.

    Keys are canonical clip ids (``official=False``; names that are not clip names are kept
    as they are, minus the extension) or the raw name minus ``.wav``/``.flac`` (``official=True``).
    A row with only a file name (or an empty label) registers the clip with no label. A
    4-column row whose end is 0 is a "not audible" row: no label (with ``official=True`` the clip
    is not even registered by it, as in the official reader).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such prediction/ground-truth file", path)
    tags: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if not fields[0].strip():
                continue
            key = match_key(fields[0], official)
            label = fields[3].strip() if len(fields) > 3 else ""
            if len(fields) == 4:
                try:
                    not_audible = float(fields[2].strip()) == 0.0
                except ValueError:
                    raise InputFileError(f"line {lineno}: end time {fields[2]!r} is not a number", path) from None
                if not_audible:
                    if not official:
                        tags.setdefault(key, [])
                    continue
            labels = tags.setdefault(key, [])
            if label:
                labels.append(label)
    return tags


def write_tag_file(
    path: str | Path,
    tags: Mapping[str, Iterable[str]],
    times: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Write clip tags in the official prediction format (one row per tag; see module doc).

    Keys are clip ids in any spelling; rows use the organisers' file spelling and the clip's
    start/end parsed from its id (or from ``times``). A clip with no tag gets a file-name-only
    row, so the file has a row for every clip.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for key, labels in tags.items():
        parsed = parse_clip_id(key)
        name = official_file_name(key) if parsed is not None else key
        if times is not None and key in times:
            start, end = times[key]
        elif parsed is not None:
            start, end = parsed[1], parsed[2]
        else:
            raise ValueError(f"no start/end for {key!r}: pass times")
        labels = list(dict.fromkeys(labels))
        if not labels:
            lines.append(name)
        for label in labels:
            if "\t" in label or "\n" in label:
                raise ValueError(f"label {label!r} contains a tab or newline")
            lines.append(f"{name}\t{start:.3f}\t{end:.3f}\t{label}")
    write_text(path, "".join(line + "\n" for line in lines))  # temporary file + rename
    return path


__all__ = ["match_key", "read_tag_file", "write_tag_file"]
