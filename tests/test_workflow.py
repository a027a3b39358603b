"""The README's "Quick start on real audio", run as a new user would: its shell block is read
from README.md (after ``<!-- workflow: quickstart -->``) and every command runs, in order, as a
subprocess, once as written (ESC-50's own labels) and once with ``--labels dcase`` (the DCASE
2017 event names): prepare soundscapes (validation and test also as video files) -> train fit
-> export -> evaluate -> eval-batch on validation -> fusion fit -> eval-batch on test with the
fusion file -> run on a shared video and on a flac. Each step must exit 0 and leave its
documented files; the test scores must beat the label-prior baseline.

The commands run in a scratch folder laid out like the project (``configs/`` linked, and
``../shared`` pointing at the shared data), with ``avtag`` resolving to the tree under test.
``AVTAG_WORKFLOW_UPTO=evaluate`` stops after ``avtag evaluate``. Bounded by steps (the
README's ``--trainer.max_steps``). Each step's wall time and CPU time (its process and children) are printed
(``-s``), never asserted.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
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


def option(command: str, name: str) -> str | None:
    """The value of ``--name`` in ``command`` (``None`` when absent)."""
    words = shlex.split(command)
    return words[words.index(name) + 1] if name in words else None


def test_the_quickstart_block_is_the_documented_workflow():
    commands = quickstart_commands()
    assert [verb(c) for c in commands] == [
        "prepare", "train", "export", "evaluate", "eval-batch", "fusion", "eval-batch", "run", "run",
    ]
    assert "--labels esc50" in commands[0] and option(commands[0], "--video-dir") == "../shared/data/videos"
    validation, fusion_fit, test = commands[4:7]
    assert option(validation, "--manifest").endswith("validation.jsonl")
    assert shlex.split(fusion_fit)[2] == "fit" and option(fusion_fit, "--eval-dir") == option(validation, "--out")
    assert option(test, "--manifest").endswith("test.jsonl") and option(test, "--fusion") == option(fusion_fit, "--out")
    events = "data/soundscapes/events.csv"
    assert option(validation, "--video-events") == option(test, "--video-events") == events
    assert option(commands[7], "--video").endswith(".mp4") and option(commands[8], "--video").endswith(".flac")


def _environment() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _argv(command: str) -> list[str]:
    """The command as an argument list; ``avtag`` is this interpreter's ``-m avtag`` (the same
    entry point as the console script, resolving to the tree under test)."""
    words = shlex.split(command)
    return [sys.executable, "-m", "avtag", *words[1:]]


def _strict_json(path: Path):
    from avtag.validate import read_json

    assert path.is_file(), path
    return read_json(path, path.name)  # refuses NaN / Infinity


def _check_step(name: str, cwd: Path, output: str, command: str) -> None:
    data = cwd / "data" / "soundscapes"
    if name == "prepare":
        from avtag.data.manifests import read_manifest
        from avtag.events import read_event_file
        from avtag.video.decode import probe

        for split in ("train", "validation", "test"):
            records = read_manifest(data / f"{split}.jsonl")
            assert records and all((data / r.audio).is_file() for r in records)
            if split == "train":
                assert all(r.video is None for r in records)  # train needs no video
            else:
                assert all(r.video == f"video/{split}/{r.id}.mp4" and (data / r.video).is_file() for r in records)
                assert all(r.extra["picture_source"] for r in records)
        assert (data / "class_labels_indices.csv").is_file()
        classes = (data / "classes.txt").read_text().split("\n")[:-1]
        assert [e.name for e in read_event_file(data / "events.csv")] == classes
        clip = probe(data / "video" / "test" / "soundscape_test_00000.mp4")
        assert clip.has_video and clip.has_audio and clip.width <= 320 and abs(clip.duration - 10.0) < 0.1
    elif name == "train":
        checkpoints = cwd / "runs" / "crnn_cpu_small" / "checkpoints"
        assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
        assert "best checkpoint (val_micro_f1" in output and str(checkpoints / "best.ckpt") in output
        assert f"stopped: max_steps ({option(command, '--trainer.max_steps')}) reached" in output
    elif name == "export":
        export = cwd / "exports" / "crnn_cpu_small"
        assert (export / "model.safetensors").is_file()
        assert "weights_sha256" in json.loads((export / "config.json").read_text())
    elif name == "evaluate":
        out = cwd / "runs" / "eval_small_test"
        for file in ("metrics.json", "predictions.csv", "probabilities.csv", "thresholds.json", "per_class.md"):
            assert (out / file).is_file(), file
        assert "baselines: label prior micro-F1" in output
    elif name == "eval-batch":
        out = cwd / option(command, "--out")
        metrics = _strict_json(out / "metrics.json")
        info = _strict_json(out / "run_info.json")
        classes = (data / "classes.txt").read_text().split("\n")[:-1]
        assert info["classes"]["video"] == classes  # --video-events: the video branch maps to the model's classes
        assert info["classes"]["fused"] == classes
        for system in ("audio", "video", "fused"):
            assert (out / f"probabilities_{system}.csv").is_file() and system in metrics["systems"], system
            assert metrics["systems"][system]["baselines"]["label_prior"]["mAP"] is not None
        assert ("fusion (rule) file" if option(command, "--fusion") else "paper-default") in \
            (info["thresholds"]["fused"] + " ".join(info["notes"]))
    elif name == "fusion":
        fusion = _strict_json(cwd / option(command, "--out"))
        assert fusion["classes"] == (data / "classes.txt").read_text().split("\n")[:-1]
        assert fusion["tuned_on"]["split"] == "validation" and "re-tuned" in output


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
    ran, times = [], []
    for command in quickstart_commands():
        command = command.replace("--labels esc50", f"--labels {labels}")
        name = verb(command)
        wall, cpu = time.perf_counter(), _children_cpu()
        result = subprocess.run(_argv(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        times.append((name, time.perf_counter() - wall, _children_cpu() - cpu))
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{command}\n{output[-3000:]}"
        _check_step(name, cwd, output, command)
        ran.append(name)
        if name == "evaluate":
            metrics = json.loads((cwd / "runs" / "eval_small_test" / "metrics.json").read_text())
            prior = metrics["baselines"]["label_prior"]
            print(f"\n{labels}: test mAP {metrics['mAP']:.3f} (prior {prior['mAP']:.3f}), micro-F1 "
                  f"{metrics['micro']['f1']:.3f} (prior {prior['micro_f1']:.3f})")
            assert metrics["mAP"] > prior["mAP"], metrics
            if upto == "evaluate":
                break
        if name == "eval-batch" and option(command, "--fusion"):
            systems = _strict_json(cwd / option(command, "--out") / "metrics.json")["systems"]
            prior = systems["fused"]["baselines"]["label_prior"]["mAP"]
            print(f"\n{labels}: eval-batch test mAP fused {systems['fused']['mAP']:.3f}, audio "
                  f"{systems['audio']['mAP']:.3f}, video {systems['video']['mAP']:.3f} (prior {prior:.3f})")
            assert max(systems["fused"]["mAP"], systems["audio"]["mAP"]) > prior, systems
    print(f"\n{labels}: step times (wall / CPU of the step's processes, seconds)")
    for name, wall, cpu in times:
        print(f"  {name:<10} {wall:6.1f} {cpu:6.1f}")
    print(f"  {'total':<10} {sum(t[1] for t in times):6.1f} {sum(t[2] for t in times):6.1f}")
    assert ran[-1] == ("evaluate" if upto == "evaluate" else "run")


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
