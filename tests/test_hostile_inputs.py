"""The standing hostile-input suite (issue 10): every bad input, broken export/checkpoint, broken
fusion file and malicious pickle, through every CLI that can receive it.

Each case must end with exit code 2, exactly one line on stderr that names the offending file, no
traceback, and no marker file (a pickle that ran code would have written it). The matrix runs the
CLIs in-process (one interpreter; torch imported once) so that ~200 cases fit the suite's budget;
a few cases also run as real subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests import hostile_inputs
from tests.conftest import PROJECT_ROOT

CLASSES_8 = ["airplane", "car_horn", "church_bells", "dog", "engine", "helicopter", "siren", "train"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good export, a good clip, a manifest of it, a good fusion file, and the hostile cases."""
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger
    from avtag.fusion import FusionModel

    root = tmp_path_factory.mktemp("hostile")
    marker = root / "MARKER-code-ran"
    torch.manual_seed(0)
    export = AudioTagger(build_model("crnn", num_classes=17, conv_channels=(8, 8, 8, 8), rnn_hidden=8),
                         LogMelFrontEnd.from_preset("crnn")).export(root / "good-export")
    rng = np.random.default_rng(0)
    clip = root / "clip.wav"
    sf.write(clip, (0.05 * rng.standard_normal(3 * 16000)).astype(np.float32), 16000)
    manifest = root / "clips.jsonl"
    manifest.write_text(json.dumps({"id": "clip", "labels": ["Car"], "audio": "clip.wav", "split": "test"}) + "\n")
    fusion = FusionModel.paper_default([0.5] * 17, [0.5] * 17)
    fusion.method = "rule"
    good_fusion = fusion.to_json()
    return {
        "root": root,
        "marker": marker,
        "export": export,
        "clip": clip,
        "manifest": manifest,
        "media": hostile_inputs.bad_media_files(root / "media"),
        "exports": hostile_inputs.broken_exports(export, root / "exports", marker),
        "fusion": hostile_inputs.broken_fusion_files(good_fusion, root / "fusion"),
        "events": hostile_inputs.broken_event_files(root / "events"),
    }


def run_cli(argv: list[str], capfd) -> tuple[int, list[str]]:
    """``avtag <argv>`` in this process: (exit code, non-empty stderr lines)."""
    from avtag.cli import main

    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capfd.readouterr().err
    return int(code or 0), [line for line in err.splitlines() if line.strip()]


def assert_one_line(code: int, lines: list[str], path: Path, world) -> None:
    text = "\n".join(lines)
    assert code == 2, f"exit code {code}, stderr:\n{text}"
    assert "Traceback" not in text, text
    assert len(lines) == 1, f"{len(lines)} stderr lines:\n{text}"
    shown = str(path).replace("\n", "\\n")
    assert str(path) in lines[0] or shown in lines[0] or path.name in lines[0] or repr(str(path))[1:-1] in lines[0], (
        f"the line does not name {path}: {lines[0]}")
    assert not world["marker"].exists(), "a pickle ran code"


MEDIA_CASES = ["missing", "directory", "empty", "text-as-mp4", "random-bytes-flac", "truncated-wav",
               "symlink-loop", "newline-in-name"]


@pytest.mark.parametrize("case", MEDIA_CASES)
@pytest.mark.parametrize("cli", ["run-video", "run-audio-checkpoint"])
def test_bad_media(world, capfd, case, cli):
    path = world["media"][case]
    argv = ["run", "--video", str(path), "--quiet"]
    if cli == "run-audio-checkpoint":
        argv += ["--audio-checkpoint", str(world["export"])]
    assert_one_line(*run_cli(argv, capfd), path, world)


EXPORT_CASES = ["config-not-json", "config-a-list", "config-nan-threshold", "config-infinite-threshold",
                "threshold-above-one", "threshold-strings", "thresholds-wrong-count", "no-model-name",
                "unknown-model-name", "model-name-a-number", "no-model-args", "model-args-a-list",
                "model-args-unknown-key", "no-frontend", "frontend-a-string", "frontend-hop-zero",
                "frontend-negative-rate", "frontend-nan-clip", "classes-a-string", "classes-too-few",
                "weights-truncated", "weights-empty", "weights-bit-flipped", "weights-not-safetensors", "no-weights",
                "malicious-pt", "malicious-ckpt", "garbage-ckpt", "missing-checkpoint"]


@pytest.mark.parametrize("case", EXPORT_CASES)
@pytest.mark.parametrize("cli", ["export", "evaluate", "run", "eval-batch"])
def test_broken_exports_and_checkpoints(world, capfd, tmp_path, case, cli):
    path = world["exports"][case]
    if cli == "export":
        argv = ["export", str(path), str(tmp_path / "out")]
    elif cli == "evaluate":
        argv = ["evaluate", "--checkpoint", str(path), "--manifest", str(world["manifest"]), "--out",
                str(tmp_path / "eval"), "--device", "cpu"]
    elif cli == "run":
        argv = ["run", "--video", str(world["clip"]), "--audio-checkpoint", str(path), "--quiet", "--device", "cpu"]
    else:
        argv = ["eval-batch", "--manifest", str(world["manifest"]), "--audio-checkpoint", str(path), "--out",
                str(tmp_path / "batch"), "--no-video", "--device", "cpu"]
    assert_one_line(*run_cli(argv, capfd), path, world)


FUSION_CASES = ["not-json", "empty", "a-list", "wrong-format", "no-format", "nan-weight", "infinite-threshold",
                "weight-above-one", "negative-threshold", "weights-a-string", "weights-a-dict", "thresholds-of-strings",
                "weights-wrong-count", "no-classes", "classes-a-number", "tuned-on-a-list",
                "clip-ids-a-number", "method-a-number", "sources-a-string"]


@pytest.mark.parametrize("case", FUSION_CASES)
@pytest.mark.parametrize("cli", ["run", "eval-batch"])
def test_broken_fusion_files(world, capfd, tmp_path, case, cli):
    path = world["fusion"][case]
    if cli == "run":
        argv = ["run", "--video", str(world["clip"]), "--audio-checkpoint", str(world["export"]), "--fusion",
                str(path), "--quiet", "--device", "cpu"]
    else:
        argv = ["eval-batch", "--manifest", str(world["manifest"]), "--audio-checkpoint", str(world["export"]),
                "--fusion", str(path), "--out", str(tmp_path / "batch"), "--device", "cpu"]
    assert_one_line(*run_cli(argv, capfd), path, world)


EVENT_FILE_CASES = ["missing", "directory", "empty", "not-utf8", "no-header", "wrong-header", "header-only",
                    "blank-name", "repeated-name", "three-fields", "json-not-csv"]


@pytest.mark.parametrize("case", EVENT_FILE_CASES)
@pytest.mark.parametrize("cli", ["run", "eval-batch"])
def test_broken_event_files(world, capfd, tmp_path, case, cli):
    """``--video-events``: refused before any model loads, in one line naming the file."""
    path = world["events"][case]
    if cli == "run":
        argv = ["run", "--video", str(world["clip"]), "--audio-checkpoint", str(world["export"]), "--video-events",
                str(path), "--quiet", "--device", "cpu"]
    else:
        argv = ["eval-batch", "--manifest", str(world["manifest"]), "--audio-checkpoint", str(world["export"]),
                "--video-events", str(path), "--out", str(tmp_path / "batch"), "--device", "cpu"]
    assert_one_line(*run_cli(argv, capfd), path, world)


def test_the_suite_counts(world):
    """The README quotes these counts; keep them in step with the matrix above."""
    cases = len(MEDIA_CASES) * 2 + len(EXPORT_CASES) * 4 + len(FUSION_CASES) * 2 + len(EVENT_FILE_CASES) * 2
    assert cases == 192
    assert set(EXPORT_CASES) == set(world["exports"])
    assert set(FUSION_CASES) == set(world["fusion"])
    assert set(EVENT_FILE_CASES) == set(world["events"])
    # not errors: an export without "classes" is the 17 DCASE events (its model has 17 outputs), and a
    # fusion file over classes the model lacks fuses nothing (the output says which classes were fused)


@pytest.mark.parametrize("case", ["malicious-pt", "weights-bit-flipped", "config-nan-threshold"])
def test_as_a_real_process(world, tmp_path, case):
    """The same contract from a fresh interpreter, as a user sees it."""
    path = world["exports"][case]
    result = subprocess.run([sys.executable, "-m", "avtag", "run", "--video", str(world["clip"]),
                             "--audio-checkpoint", str(path), "--quiet", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert_one_line(result.returncode, lines, path, world)
