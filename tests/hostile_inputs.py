"""Generators of hostile inputs for tests/test_hostile_inputs.py (not a test module).

Every generator writes its files under a given folder and returns ``{case name: path}``. The cases
are what a careless or malicious user can hand avtag: files that are missing, empty, folders,
symlink loops, odd names, non-media bytes, truncated media; broken exports and checkpoints; broken
fusion files; pickles that run code when unpickled (each writes a marker file, so a test can prove
that nothing ran).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: code ran if the marker exists."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": _RunsCode(marker), "model_name": "crnn"}, protocol=2)


def write_malicious_torch_file(path: Path, marker: Path) -> Path:
    """A ``torch.save``-style zip whose data.pkl runs code when unpickled (weights_only refuses it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", malicious_pickle_bytes(marker))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return path


def _wav_header(num_samples: int, sample_rate: int = 16000) -> bytes:
    data_bytes = num_samples * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1,
            sample_rate, sample_rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def bad_media_files(folder: Path) -> dict[str, Path]:
    """Inputs that are not decodable media, each as a separate file."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Path] = {}
    cases["missing"] = folder / "does-not-exist.mp4"
    (folder / "a-folder.mp4").mkdir(exist_ok=True)
    cases["directory"] = folder / "a-folder.mp4"
    (folder / "empty.wav").write_bytes(b"")
    cases["empty"] = folder / "empty.wav"
    (folder / "notes.mp4").write_text("this is not a video\n" * 20)
    cases["text-as-mp4"] = folder / "notes.mp4"
    (folder / "noise.flac").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases["random-bytes-flac"] = folder / "noise.flac"
    (folder / "header-only.wav").write_bytes(_wav_header(160000))  # promises 10 s, holds none
    cases["truncated-wav"] = folder / "header-only.wav"
    loop = folder / "loop.wav"
    if not loop.is_symlink():
        os.symlink(loop, loop)
    cases["symlink-loop"] = loop
    odd = folder / "line\nbreak.wav"
    odd.write_bytes(b"")
    cases["newline-in-name"] = odd
    return cases


# --------------------------------------------------------------------------- exports


def _edit_config(export: Path, out: Path, edit) -> Path:
    shutil.copytree(export, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    edited = edit(copy.deepcopy(config))
    (out / "config.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    return out


def _set(path: list[Any], value: Any):
    def edit(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return config

    return edit


def _drop(key: str):
    def edit(config):
        config.pop(key, None)
        return config

    return edit


def broken_exports(good_export: Path, folder: Path, marker: Path) -> dict[str, Path]:
    """Copies of a good export directory, each broken in one way; plus pickle checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((good_export / "config.json").read_text())
    n = len(config["classes"])
    edits = {
        "config-not-json": lambda c: "{not json",
        "config-a-list": lambda c: "[1, 2, 3]",
        "config-nan-threshold": lambda c: json.dumps(c | {"thresholds": [0.5] * (n - 1) + [float("nan")]}),
        "config-infinite-threshold": lambda c: json.dumps(c | {"thresholds": [float("inf")] * n}),
        "threshold-above-one": _set(["thresholds"], [1.5] * n),
        "threshold-strings": _set(["thresholds"], ["high"] * n),
        "thresholds-wrong-count": _set(["thresholds"], [0.5] * (n + 2)),
        "no-model-name": _drop("model_name"),
        "unknown-model-name": _set(["model_name"], "no_such_model"),
        "model-name-a-number": _set(["model_name"], 17),
        "no-model-args": _drop("model_args"),
        "model-args-a-list": _set(["model_args"], [1, 2]),
        "model-args-unknown-key": lambda c: c | {"model_args": dict(c["model_args"], no_such_argument=3)},
        "no-frontend": _drop("frontend"),
        "frontend-a-string": _set(["frontend"], "crnn"),
        "frontend-hop-zero": lambda c: c | {"frontend": dict(c["frontend"], hop_length=0)},
        "frontend-negative-rate": lambda c: c | {"frontend": dict(c["frontend"], sample_rate=-1)},
        "frontend-nan-clip": lambda c: json.dumps(c | {"frontend": dict(c["frontend"], clip_seconds=float("nan"))}),
        "classes-a-string": _set(["classes"], "Car"),
        "classes-too-few": _set(["classes"], config["classes"][:5]),
    }
    cases: dict[str, Path] = {}
    for name, edit in edits.items():
        cases[name] = _edit_config(good_export, folder / name, edit)
    weights = good_export / "model.safetensors"
    blob = weights.read_bytes()
    for name, data in {
        "weights-truncated": blob[: len(blob) // 2],
        "weights-empty": b"",
        "weights-bit-flipped": blob[:-64] + bytes([blob[-64] ^ 0x10]) + blob[-63:],
        "weights-not-safetensors": b"\x80\x02}q\x00." + b"\0" * 64,
    }.items():
        out = folder / name
        shutil.copytree(good_export, out, dirs_exist_ok=True)
        (out / "model.safetensors").write_bytes(data)
        cases[name] = out
    missing = folder / "no-weights"
    shutil.copytree(good_export, missing, dirs_exist_ok=True)
    (missing / "model.safetensors").unlink()
    cases["no-weights"] = missing
    cases["malicious-pt"] = write_malicious_torch_file(folder / "evil.pt", marker)
    cases["malicious-ckpt"] = write_malicious_torch_file(folder / "evil.ckpt", marker)
    (folder / "garbage.ckpt").write_bytes(b"PK\x03\x04 garbage" * 10)
    cases["garbage-ckpt"] = folder / "garbage.ckpt"
    cases["missing-checkpoint"] = folder / "no-such-export"
    return cases


# --------------------------------------------------------------------------- fusion files


def broken_fusion_files(good: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Fusion JSON files broken in one way each, from a good ``FusionModel.to_json()`` dict."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(good["classes"])
    variants: dict[str, Any] = {
        "not-json": "{ nope",
        "empty": "",
        "a-list": [1, 2, 3],
        "wrong-format": good | {"format": "something-else/9"},
        "no-format": {k: v for k, v in good.items() if k != "format"},
        "nan-weight": json.dumps(good | {"audio_weights": [float("nan")] * n}),
        "infinite-threshold": json.dumps(good | {"thresholds": [float("inf")] * n}),
        "weight-above-one": good | {"audio_weights": [1.5] * n},
        "negative-threshold": good | {"thresholds": [-0.2] * n},
        "weights-a-string": good | {"audio_weights": "0.8"},
        "weights-a-dict": good | {"audio_weights": {"Car": 0.8}},
        "thresholds-of-strings": good | {"thresholds": ["0.5"] * n},
        "weights-wrong-count": good | {"audio_weights": [0.5] * (n - 1)},
        "no-classes": {k: v for k, v in good.items() if k != "classes"},
        "classes-a-number": good | {"classes": 17},
        "tuned-on-a-list": good | {"tuned_on": ["validation"]},
        "clip-ids-a-number": good | {"tuned_on": {"split": "validation", "clip_ids": 5}},
        "method-a-number": good | {"method": 3},
        "sources-a-string": good | {"sources": "audio"},
    }
    cases: dict[str, Path] = {}
    for name, content in variants.items():
        path = folder / f"{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        cases[name] = path
    return cases


# --------------------------------------------------------------------------- event files (--video-events)


def broken_event_files(folder: Path) -> dict[str, Path]:
    """``--video-events`` files broken in one way each (the good form is ``name,description`` rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    variants: dict[str, str | bytes] = {
        "empty": "",
        "not-utf8": b"name,description\n\xff\xfe car,\xc3\n",
        "no-header": "Car,a car on the road\nTrain,a train\n",
        "wrong-header": "event,text\nCar,a car\n",
        "header-only": "name,description\n",
        "blank-name": "name,description\n ,a car\n",
        "repeated-name": "name,description\nCar,a car\nCar,another car\n",
        "three-fields": "name,description\nCar,a car,extra\n",
        "json-not-csv": json.dumps({"events": ["Car"]}),
    }
    cases: dict[str, Path] = {"missing": folder / "no-such-events.csv"}
    (folder / "a-folder.csv").mkdir(exist_ok=True)
    cases["directory"] = folder / "a-folder.csv"
    for name, content in variants.items():
        path = folder / f"{name}.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        cases[name] = path
    return cases
