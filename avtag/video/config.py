"""Video-branch settings from a YAML file (``--video-config``), like the audio recipes.

The file is a flat mapping of :class:`avtag.video.branch.VideoBranchConfig` fields, e.g.
``configs/video/paper.yaml``. Unknown keys and values of the wrong type are refused with one
line naming the file; nothing in the file is instantiated or executed (``yaml.safe_load``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from avtag.errors import InputFileError, check_input_file


class VideoConfigError(InputFileError):
    """A video-branch config file that cannot be used."""


def _allowed(field_type: Any) -> tuple[list[type], list[Any]]:
    """The plain types and literal values a VideoBranchConfig field accepts."""
    types: list[type] = []
    literals: list[Any] = []
    stack = [field_type]
    while stack:
        current = stack.pop()
        origin = typing.get_origin(current)
        if origin is typing.Literal:
            literals.extend(typing.get_args(current))
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
            stack.extend(typing.get_args(current))
        elif current is type(None):
            types.append(type(None))
        elif isinstance(current, type):
            types.append(current)
    return types, literals


def config_from_mapping(values: dict[str, Any], source: str | Path | None = None):
    """A :class:`VideoBranchConfig` from a mapping, checking every key and value."""
    from avtag.video.branch import VideoBranchConfig

    if not isinstance(values, dict):
        raise VideoConfigError("expected a mapping of video-branch settings", source)
    hints = typing.get_type_hints(VideoBranchConfig)
    fields = {f.name for f in dataclasses.fields(VideoBranchConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise VideoConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(fields))}", source)
        types, literals = _allowed(hints[key])
        ok = value in literals if not isinstance(value, bool) or bool in types else False
        if not ok:
            for allowed in types:
                if allowed is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                    ok = math.isfinite(float(value))
                    value = float(value)
                elif allowed is int and isinstance(value, int) and not isinstance(value, bool):
                    ok = True
                elif allowed is not float and allowed is not int and isinstance(value, allowed):
                    ok = True
                if ok:
                    break
        if not ok:
            raise VideoConfigError(f"setting {key!r} has an invalid value {value!r}", source)
        kwargs[key] = value
    return VideoBranchConfig(**kwargs)


def load_video_config(path: str | Path):
    """Read a video-branch YAML config into a :class:`VideoBranchConfig`."""
    import yaml

    path = check_input_file(path, "a video-branch YAML config", VideoConfigError)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise VideoConfigError(f"not a readable YAML file ({type(err).__name__})", path) from None
    return config_from_mapping(values or {}, path)
