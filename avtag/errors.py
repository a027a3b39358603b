"""User-facing errors: one clear line that names the file and the problem.

CLIs catch :class:`AvtagError`, print ``str(err)`` to stderr and exit with code 2
(see :func:`avtag.errors.cli_guard`); library users catch it like any exception.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

EXIT_USER_ERROR = 2


class AvtagError(Exception):
    """An error caused by the user's input, reported as a single line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        line = f"{self.path}: {message}" if self.path else message
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


def check_input_file(
    path: str | Path, expected: str = "a media file", error: type[InputFileError] = InputFileError
) -> Path:
    """The one-line errors every reader shares: a missing path, a directory, an empty file."""
    path = Path(path)
    if not path.exists():
        raise error("no such file", path)
    if path.is_dir():
        raise error(f"is a directory, expected {expected}", path)
    if path.stat().st_size == 0:
        raise error(f"empty file (0 bytes), expected {expected}", path)
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
