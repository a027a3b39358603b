"""scripts/eval_dcase17.py: resumable batch evaluation (SIGKILL midway, rerun -> the same
files), failures that never stop the batch, the tuning-split guard, video + fused systems."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag.data.manifests import ClipRecord, write_manifest
from avtag.events import event_names
from avtag.fusion import FusionModel
from avtag.metrics import read_tag_file
from tests.conftest import PROJECT_ROOT, shared_path
from tests.test_run import export_tiny_crnn

SCRIPT = PROJECT_ROOT / "scripts" / "eval_dcase17.py"
FINAL_FILES = ("predictions_audio.txt", "probabilities_audio.csv", "metrics.json", "per_class.csv", "failures.csv")


def run_eval(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **(env_extra or {}))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args, "--quiet"], stdout=out, stderr=err, text=True,
                                cwd=PROJECT_ROOT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=300)
        finally:
            try:  # a SIGKILLed run may leave decoding workers behind for a moment: end its group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, code, out.read(), err.read())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Seven labelled 10 s DCASE-style clips (one corrupt) and an untrained CRNN export."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    names = event_names()
    records = []
    for i in range(7):
        clip = f"Y{'abcdefghijk'[:10]}{i}_{10 * i:.3f}_{10 * i + 10:.3f}"
        path = root / f"{clip}.wav"
        if i == 4:
            path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not really audio")
        else:
            tone = np.sin(2 * np.pi * (300 + 150 * i) * np.arange(3 * 16000) / 16000)
            sf.write(path, (0.3 * tone + 0.01 * rng.standard_normal(len(tone))).astype(np.float32), 16000)
        records.append(ClipRecord(id=clip, labels=[names[i], names[(3 * i + 1) % 17]], audio=path.name,
                                  start=10.0 * i, end=10.0 * i + 10, split="test"))
    manifest = write_manifest(records, root / "test.jsonl")
    checkpoint = export_tiny_crnn(root / "crnn", thresholds=0.52)
    return root, manifest, checkpoint


@pytest.fixture(scope="module")
def uninterrupted(workspace):
    root, manifest, checkpoint = workspace
    out = root / "out_full"
    proc = run_eval("--manifest", str(manifest), "--out", str(out), "--audio-checkpoint", str(checkpoint),
                    "--workers", "2", "--chunk", "3", "--no-video")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_killed_run_resumes_to_the_same_files(workspace, uninterrupted):
    root, manifest, checkpoint = workspace
    full, _ = uninterrupted
    out = root / "out_resumed"
    args = ("--manifest", str(manifest), "--out", str(out), "--audio-checkpoint", str(checkpoint),
            "--workers", "2", "--chunk", "3", "--no-video")
    killed = run_eval(*args, env_extra={"AVTAG_EVAL_KILL_AFTER": "4"})
    assert killed.returncode == -signal.SIGKILL
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert not (out / "predictions_audio.txt").exists()
    resumed = run_eval(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "processed 3 clips" in resumed.stderr  # only what was missing
    for name in FINAL_FILES:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name

    def by_id(path: Path) -> dict:
        return {e["id"]: e for e in map(json.loads, path.read_text().splitlines())}

    assert by_id(out / "results.jsonl") == by_id(full / "results.jsonl")
    # a third run has nothing left to do and rewrites the same files
    again = run_eval(*args)
    assert again.returncode == 0 and "processed" not in again.stderr
    assert (out / "metrics.json").read_bytes() == (full / "metrics.json").read_bytes()


def test_outputs_cover_every_clip_and_the_corrupt_one_fails(workspace, uninterrupted):
    root, manifest, _ = workspace
    full, proc = uninterrupted
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    with (full / "failures.csv").open() as fh:
        failures = list(csv.DictReader(fh))
    assert [f["id"] for f in failures] == [ids[4]] and "not" in failures[0]["reason"]
    predicted = read_tag_file(full / "predictions_audio.txt")
    assert sorted(predicted) == sorted(ids)  # a row for every clip, failed and untagged ones too
    assert predicted[ids[4]] == []
    with (full / "probabilities_audio.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", *event_names()] and [r[0] for r in rows[1:]] == ids
    assert all(cell == "" for cell in rows[1 + 4][1:])  # the failed clip has no probabilities
    # the scores in metrics.json are those of the prediction file (thresholds 0.52)
    probs = np.array([[float(c) for c in r[1:]] for i, r in enumerate(rows[1:]) if i != 4])
    for row, clip in zip(probs, [c for i, c in enumerate(ids) if i != 4]):
        assert sorted(predicted[clip]) == sorted(n for n, p in zip(event_names(), row) if p >= 0.52)
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["num_failed"] == 1 and set(metrics["systems"]) == {"audio"}
    assert "micro f1" in proc.stdout


def test_refuses_to_report_on_the_fusion_tuning_split(workspace, tmp_path):
    root, manifest, checkpoint = workspace
    fusion = FusionModel.paper_default([0.5] * 17, [0.5] * 17)
    fusion.tuned_on = {"split": "test", "num_clips": 7, "clip_ids": None}
    fusion_path = fusion.save(tmp_path / "fusion.json")
    proc = run_eval("--manifest", str(manifest), "--out", str(tmp_path / "o"), "--audio-checkpoint",
                    str(checkpoint), "--fusion", str(fusion_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "tuned on split 'test'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_video_and_fused_systems_on_real_clips(workspace, tmp_path):
    _, _, checkpoint = workspace
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("seoul.mp4", "chaplin.mp4"):  # no audio stream; real audio
        (clips / name).symlink_to(shared_path("data", "videos", name))
    out = tmp_path / "out"
    proc = run_eval("--clips-dir", str(clips), "--out", str(out), "--audio-checkpoint", str(checkpoint),
                    "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    entries = {e["id"]: e for e in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert entries["seoul"]["audio"] is None and len(entries["seoul"]["video"]) == 17
    assert len(entries["chaplin"]["audio"]) == 17 and len(entries["chaplin"]["video"]) == 17
    for system in ("audio", "video", "fused"):
        assert sorted(read_tag_file(out / f"predictions_{system}.txt")) == ["chaplin", "seoul"]
    with (out / "probabilities_fused.csv").open() as fh:
        fused = {r["id"]: r for r in csv.DictReader(fh)}
    # seoul has no sound: its fused probabilities are the video branch's
    np.testing.assert_allclose([float(fused["seoul"][n]) for n in event_names()], entries["seoul"]["video"], atol=1e-6)
    assert json.loads((out / "metrics.json").read_text())["labelled"] is False
