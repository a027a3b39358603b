"""Video-branch settings from a YAML file (``--video-config``), like the audio recipes.

The file is a flat mapping of :class:`avtag.video.branch.VideoBranchConfig` fields, e.g.
``configs/video/paper.yaml`` (004 §2.2 exactly) or ``configs/video/embedded.yaml`` (the
offline default). Unknown keys and values of the wrong type are refused with one line naming
the file; nothing in the file is instantiated or executed (``yaml.safe_load``).

Our documented choices:
  - Relative paths in the file (``weights_path``, ``word_vectors_path``,
    ``alexnet_weights_path``, ``ontology_path``) are relative to the YAML file's folder, so a
    config works from any working directory; ``~`` is expanded.
  - Every file a config names is checked when it is loaded (:func:`check_config_files`), so a
    paper config without its weights fails with one line saying where to put them, before
    any video is decoded.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from avtag.errors import CheckpointError, InputFileError, check_input_file


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


PATH_FIELDS = ("weights_path", "word_vectors_path", "alexnet_weights_path", "ontology_path")

# What each file is, and what to put there, for the one-line "where to put it" error.
_FILES = {
    "weights_path": ("{recognizer} weights file", "{origin}"),
    "word_vectors_path": ("word-vector file", "glove.840B.300d.txt from the GloVe project, "
                          "unzipped, or word2vec text/binary, or .npy + .vocab.txt"),
    "alexnet_weights_path": ("AlexNet weights file",
                             "torchvision's alexnet-owt-7be5be79.pth state dict"),
    "ontology_path": ("ontology file", "the AudioSet ontology.json (github.com/audioset/ontology)"),
}
_RECOGNIZER_ORIGIN = {
    "inception_v4": "model.safetensors of the Hugging Face repo timm/inception_v4.tf_in1k",
    "efficientnet_lite0": "an EfficientNet-Lite0 state dict",
}


class MissingFilesError(VideoConfigError, CheckpointError):
    """Files a video-branch config names are absent (a config and a weights problem)."""


def check_config_files(config, source: str | Path | None = None) -> None:
    """One line listing every file the config names that is absent, and what to put there.

    Also refuses settings that need a file but name none (e.g. ``keyframe_features:
    alexnet_conv5`` without ``alexnet_weights_path``), and a gensim native (pickle) word-vector
    file without ``trust_pickle``. Reads only file headers, never unpickles.
    """
    need = {
        "word_vectors_path": config.word_vectors == "keyed-vectors",
        "alexnet_weights_path": config.keyframe_features == "alexnet_conv5",
        "ontology_path": config.event_descriptions == "ontology",
    }
    for name, required in need.items():
        if required and getattr(config, name) is None:
            raise VideoConfigError(f"{name} is required by these settings: set it to the "
                                   f"path of {_FILES[name][1]}", source)
    missing = []
    for name in PATH_FIELDS:
        value = getattr(config, name)
        if value is None or Path(value).is_file():
            continue
        origin = _RECOGNIZER_ORIGIN.get(config.recognizer, "its weights")
        label, content = (text.format(recognizer=config.recognizer, origin=origin)
                          for text in _FILES[name])
        missing.append(f"{label} not found at {value} (put {content} there)")
    if missing:
        raise MissingFilesError("; ".join(missing) + "; or edit the paths in the config "
                                "(avtag never downloads)", source)
    if config.word_vectors == "keyed-vectors" and not config.trust_pickle:
        from avtag.video.word_vectors import PICKLE_REFUSED, detect_vector_format

        try:
            kind = detect_vector_format(Path(config.word_vectors_path))
        except InputFileError:
            kind = None  # not a vector file at all: reported when the vectors load
        if kind == "native":
            raise VideoConfigError(f"word_vectors_path {config.word_vectors_path}: "
                                   f"{PICKLE_REFUSED}", source)


def load_video_config(path: str | Path):
    """Read a video-branch YAML config into a :class:`VideoBranchConfig` and check its files."""
    import yaml

    path = check_input_file(path, "a video-branch YAML config", VideoConfigError)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise VideoConfigError(f"not a readable YAML file ({type(err).__name__})", path) from None
    if isinstance(values, dict):
        values = dict(values)
        for name in PATH_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = str((path.parent / Path(values[name]).expanduser()).resolve())
    config = config_from_mapping(values or {}, path)
    check_config_files(config, path)
    return config
