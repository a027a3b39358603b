"""Atomic output files: every file avtag writes for a user goes through here.

A file is written to a temporary sibling in the same folder, flushed and fsynced, then renamed
over the target with :func:`os.replace`, so a reader (or a run killed midway) sees either the
old file whole or the new file whole, never a partial one. JSON is written strictly
(``allow_nan=False``): ``NaN`` is not JSON, and a non-finite number is a bug to surface, not to
store.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding,
                       newline=None if "b" in mode else "") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV file (``header`` then ``rows``, ``\n`` line ends) atomically."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (``NaN``/``Infinity`` raise ``ValueError``)."""
    return json.dumps(obj, indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (a trailing newline included)."""
    return write_text(path, dumps_json(obj, indent=indent) + "\n")


def check_writable(path: str | Path) -> Path:
    """Fail early, before any analysis, when ``path`` cannot be written.

    Raises :class:`avtag.errors.AvtagError` naming the folder. The folder is created if needed.
    """
    from avtag.errors import AvtagError

    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AvtagError(f"cannot create the output folder: {err.strerror or err}", folder) from None
    if path.is_dir():
        raise AvtagError("is a directory, expected an output file path", path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AvtagError("output folder is not writable", folder)
    return path
