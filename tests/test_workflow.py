"""The README's "Quick start on real audio", run as a new user would: its shell block is read
from README.md (after ``<!-- workflow: quickstart -->``) and every command runs, in order, as a
subprocess, once as written (ESC-50's own labels) and once with ``--labels dcase`` (the DCASE
2017 event names). Each step must exit 0 and leave its documented files; the evaluation must
beat the label-prior baseline.

The commands run in a scratch folder laid out like the project (``configs/`` linked, and
``../shared`` pointing at the shared data), with ``avtag`` resolving to the tree under test.
``AVTAG_WORKFLOW_UPTO=evaluate`` stops after ``avtag evaluate`` (the batch-evaluation, fusion
and run steps belong to other parts of avtag). Bounded by steps (60 training steps per run).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, shared_path

README = PROJECT_ROOT / "README.md"
STEP_TIMEOUT = 1800  # seconds: a safety net for a hung step, never a speed check


def quickstart_commands() -> list[str]:
    """The command lines of the README's quick-start block (comments and blank lines dropped)."""
    found = re.search(r"<!-- workflow: quickstart -->\n```bash\n(.*?)```", README.read_text(), re.S)
    assert found, "README.md has no '<!-- workflow: quickstart -->' bash block"
    return [line.strip() for line in found.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def verb(command: str) -> str:
    """``prepare``, ``train``, ``export``, ``evaluate``, ``eval-batch``, ``fusion`` or ``run``."""
    words = shlex.split(command)
    assert words[0] == "avtag", command
    return words[1]


def test_the_quickstart_block_is_the_documented_workflow():
    assert [verb(c) for c in quickstart_commands()] == [
        "prepare", "train", "export", "evaluate", "eval-batch", "eval-batch", "run", "run",
    ]
    assert "--labels esc50" in quickstart_commands()[0]


def _environment() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _argv(command: str) -> list[str]:
    """The command as an argument list; ``avtag`` is this interpreter's ``-m avtag`` (the same
    entry point as the console script, resolving to the tree under test)."""
    words = shlex.split(command)
    return [sys.executable, "-m", "avtag", *words[1:]]


def _check_step(name: str, cwd: Path, output: str) -> None:
    if name == "prepare":
        for split in ("train", "validation", "test"):
            assert (cwd / "data" / "soundscapes" / f"{split}.jsonl").is_file()
        assert (cwd / "data" / "soundscapes" / "class_labels_indices.csv").is_file()
    elif name == "train":
        checkpoints = cwd / "runs" / "crnn_cpu_small" / "checkpoints"
        assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
        assert f"best checkpoint (val_micro_f1" in output and str(checkpoints / "best.ckpt") in output
        assert "stopped: max_steps (60) reached" in output
    elif name == "export":
        export = cwd / "exports" / "crnn_cpu_small"
        assert (export / "model.safetensors").is_file()
        assert "weights_sha256" in json.loads((export / "config.json").read_text())
    elif name == "evaluate":
        out = cwd / "runs" / "eval_small_test"
        for file in ("metrics.json", "predictions.csv", "probabilities.csv", "thresholds.json", "per_class.md"):
            assert (out / file).is_file(), file
        assert "baselines: label prior micro-F1" in output


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["esc50", "dcase"])
def test_readme_quickstart_runs_end_to_end(tmp_path, labels):
    shared = shared_path("data", "esc50").parents[1]
    (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / "configs").symlink_to(PROJECT_ROOT / "configs", target_is_directory=True)
    upto = os.environ.get("AVTAG_WORKFLOW_UPTO")
    env = _environment()
    ran = []
    for command in quickstart_commands():
        command = command.replace("--labels esc50", f"--labels {labels}")
        name = verb(command)
        result = subprocess.run(_argv(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{command}\n{output[-3000:]}"
        _check_step(name, cwd, output)
        ran.append(name)
        if name == "evaluate":
            metrics = json.loads((cwd / "runs" / "eval_small_test" / "metrics.json").read_text())
            prior = metrics["baselines"]["label_prior"]
            print(f"\n{labels}: test mAP {metrics['mAP']:.3f} (prior {prior['mAP']:.3f}), micro-F1 "
                  f"{metrics['micro']['f1']:.3f} (prior {prior['micro_f1']:.3f})")
            assert metrics["mAP"] > prior["mAP"], metrics
            if upto == "evaluate":
                break
    assert ran[-1] == ("evaluate" if upto == "evaluate" else "run")
