"""User-facing errors: one clear line that names the file and the problem.

CLIs catch :class:`AvtagError`, print ``str(err)`` to stderr and exit with code 2
(see :func:`avtag.errors.cli_guard`); library users catch it like any exception.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

EXIT_USER_ERROR = 2


class AvtagError(Exception):
    """An error caused by the user's input, reported as a single line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        shown = None if path is None else (self.path if self.path.isprintable() or self.path.startswith("'")
                                           else repr(self.path))
        line = f"{shown}: {message}" if shown else message
        super().__init__(" ".join(line.split()))  # never more than one line


class InputFileError(AvtagError):
    """A file that is missing, empty, truncated or not of the expected kind."""


class AudioDecodeError(InputFileError):
    """An audio file (or the audio track of a video) that cannot be decoded."""


class VideoDecodeError(InputFileError):
    """A video file that cannot be decoded."""


class CheckpointError(InputFileError):
    """A checkpoint or export directory that cannot be read."""


class ManifestError(InputFileError):
    """A manifest that is malformed or names absent files."""


def display_path(path: str | Path) -> str:
    """``path`` as it should appear in a one-line message: repr-style when it holds a newline
    or another unprintable character, so the message names exactly one file."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def check_input_file(
    path: str | Path, expected: str = "a media file", error: type[InputFileError] = InputFileError
) -> Path:
    """The one-line errors every reader shares: a missing path, a directory, an empty file,
    permission denied, a broken symbolic link and a symbolic-link loop, each said as such, with
    the path shown by :func:`display_path`."""
    path = Path(path)
    shown = display_path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise error("symbolic link loop (the link resolves back to itself)", shown) from None
        if err.errno in (errno.EACCES, errno.EPERM):
            raise error("permission denied (a folder on the path cannot be searched)", shown) from None
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                target = display_path(os.readlink(path))
                raise error(f"broken symbolic link (points to {target}, which does not exist)",
                            shown) from None
            raise error("no such file", shown) from None
        raise error(f"cannot access ({err.strerror or type(err).__name__})", shown) from None
    if os.path.isdir(path):
        raise error(f"is a directory, expected {expected}", shown)
    if info.st_size == 0:
        raise error(f"empty file (0 bytes), expected {expected}", shown)
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        raise error("permission denied (the file is not readable by this user)", shown) from None
    except OSError as err:
        raise error(f"cannot open ({err.strerror or type(err).__name__})", shown) from None
    return path


F = TypeVar("F", bound=Callable[..., int | None])


def cli_guard(main: F) -> F:
    """Wrap a CLI ``main``: user errors become one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except AvtagError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def interrupts_are_final() -> Iterator[None]:
    """Within the block, a Ctrl-C cannot be lost: SIGINT is recorded before Python's handler
    raises ``KeyboardInterrupt``, and if the block still ends normally (the exception swallowed
    by a library, a finalizer, a C extension), ``KeyboardInterrupt`` is raised at its end, so the
    CLI exits 130 ("interrupted") rather than 0 with part of the work done.

    Unguarded outside the main thread (only it can set signal handlers) and where SIGINT is
    ignored (a background job started with ``nohup``/``&`` keeps ignoring it).
    """
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None or previous == signal.SIG_IGN:
        yield
        return
    received = []

    def record(signum, frame):
        received.append(signum)
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
