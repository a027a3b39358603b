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
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT),
               **(env_extra or {}))
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


# --------------------------------------------------------------------------- fusion workflow: eval -> fit -> eval


def write_clip(path: Path, seconds: float, shade: int, tone_hz: float) -> Path:
    """A small video (mpeg4, 160x120, 12 fps) with a tone on its sound track (aac), via PyAV."""
    import av

    rate, sample_rate = 12, 22050
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=rate)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate)
        ramp = np.linspace(0, 255, 160, dtype=np.float32)
        for i in range(int(seconds * rate)):
            frame = np.empty((120, 160, 3), np.uint8)
            frame[...] = ((ramp + shade + 5 * i) % 256).astype(np.uint8)[None, :, None]
            frame[..., shade % 3] //= 2
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        samples = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[start:start + 1024][None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def fusion_workflow(workspace):
    """Validation (4 clips) and test (2 clips) videos with sound, the validation run and its fusion file."""
    from avtag.fusion import main as fusion_main

    root, _, checkpoint = workspace
    names = event_names()
    manifests = {}
    for split, count, offset in (("validation", 4, 0), ("test", 2, 4)):
        records = []
        for i in range(offset, offset + count):
            path = write_clip(root / f"av{i}.mp4", 2.0, shade=40 * i, tone_hz=300 + 120 * i)
            records.append(ClipRecord(id=f"av{i}", labels=[names[i % 17], names[(5 * i + 2) % 17]], video=path.name,
                                      split=split))
        manifests[split] = write_manifest(records, root / f"{split}.jsonl")
    eval_val = root / "eval_val"
    proc = run_eval("--manifest", str(manifests["validation"]), "--out", str(eval_val), "--audio-checkpoint",
                    str(checkpoint), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    fusion_path = root / "fusion.json"
    assert fusion_main(["fit", "--eval-dir", str(eval_val), "--out", str(fusion_path), "--method", "search",
                        "--seed", "1"]) == 0
    return root, manifests, eval_val, fusion_path, checkpoint


def read_probabilities(path: Path) -> dict[str, np.ndarray]:
    with path.open() as fh:
        return {row["id"]: np.array([float(row[n]) for n in event_names()]) for row in csv.DictReader(fh)}


def test_fit_on_the_validation_run_then_report_on_the_test_split(fusion_workflow):
    root, manifests, eval_val, fusion_path, checkpoint = fusion_workflow
    fusion = FusionModel.load(fusion_path)
    run_info = json.loads((eval_val / "run_info.json").read_text())
    assert run_info["manifest"] == str(manifests["validation"].resolve())  # fit's default manifest
    assert fusion.method == "search" and fusion.settings["seed"] == 1
    assert fusion.tuned_on["split"] == "validation" and fusion.tuned_on["clip_ids"] == ["av0", "av1", "av2", "av3"]
    assert fusion.sources["audio"]["weights_sha256"] == run_info["models"]["audio"]["weights_sha256"]
    assert fusion.sources["video"] == run_info["models"]["video"] and fusion.sources["video"]["fps"] == 3.0
    # the recorded validation F1s are those of the run's probabilities with the file's weights and thresholds
    audio, video = (read_probabilities(eval_val / f"probabilities_{b}.csv") for b in ("audio", "video"))
    ids = fusion.tuned_on["clip_ids"]
    labels = {json.loads(line)["id"]: json.loads(line)["labels"] for line in manifests["validation"].read_text().splitlines()}
    targets = np.array([[n in labels[c] for n in event_names()] for c in ids])
    from avtag.thresholds import micro_f1

    fused = fusion.fuse(np.stack([audio[c] for c in ids]), np.stack([video[c] for c in ids]))
    assert micro_f1(targets, fused, fusion.thresholds) == pytest.approx(fusion.validation["micro_f1"]["fused"])
    val = fusion.validation["micro_f1"]
    assert val["fused"] >= max(val["audio"], val["video"]) - 1e-12  # the search starts from either branch alone

    out = root / "eval_test"
    proc = run_eval("--manifest", str(manifests["test"]), "--out", str(out), "--audio-checkpoint", str(checkpoint),
                    "--workers", "0", "--fusion", str(fusion_path))
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # same models as the tuning run
    audio, video, fused = (read_probabilities(out / f"probabilities_{s}.csv") for s in ("audio", "video", "fused"))
    predicted = read_tag_file(out / "predictions_fused.txt")
    assert sorted(fused) == ["av4", "av5"]
    for clip in fused:  # 004 §2.3 with the tuned weights, thresholded with the tuned thresholds
        expected = fusion.audio_weights * audio[clip] + (1 - fusion.audio_weights) * video[clip]
        np.testing.assert_allclose(fused[clip], expected, atol=2e-6)
        assert sorted(predicted[clip]) == sorted(n for n, p, t in zip(event_names(), fused[clip], fusion.thresholds)
                                                 if p >= t)


def test_evaluating_the_tuning_split_with_its_fusion_file_is_refused(fusion_workflow):
    root, manifests, _, fusion_path, checkpoint = fusion_workflow
    proc = run_eval("--manifest", str(manifests["validation"]), "--out", str(root / "eval_again"),
                    "--audio-checkpoint", str(checkpoint), "--fusion", str(fusion_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "were used to tune the fusion" in lines[0]
    assert not (root / "eval_again" / "results.jsonl").exists()


def test_skip_incomplete_drops_clips_without_both_branches(fusion_workflow, tmp_path):
    from avtag.fusion import main as fusion_main

    _, _, eval_val, _, _ = fusion_workflow
    broken = _copy_with_blank_video_row(eval_val, tmp_path / "eval", "av2")
    assert fusion_main(["fit", "--eval-dir", str(broken), "--out", str(tmp_path / "f.json"), "--method", "rule",
                        "--skip-incomplete"]) == 0
    fusion = FusionModel.load(tmp_path / "f.json")
    assert fusion.tuned_on["clip_ids"] == ["av0", "av1", "av3"] and fusion.tuned_on["skipped_clips"] == ["av2"]
    assert fusion.method == "rule" and set(np.round(fusion.audio_weights, 6)) <= {0.2, 0.8}


def _copy_with_blank_video_row(eval_dir: Path, out: Path, clip: str) -> Path:
    import shutil

    shutil.copytree(eval_dir, out)
    path = out / "probabilities_video.csv"
    lines = path.read_text().splitlines()
    lines = [",".join([clip] + [""] * 17) if line.startswith(clip + ",") else line for line in lines]
    path.write_text("\n".join(lines) + "\n")
    return out


def _fit_case(case: str, root: Path, eval_val: Path, audio_only: Path, manifests: dict) -> list[str]:
    """Arguments of ``python -m avtag.fusion fit`` for one bad-input case."""
    import shutil

    base = ["fit", "--out", str(root / f"{case}.json")]
    if case == "missing eval dir":
        return [*base, "--eval-dir", str(root / "nope")]
    if case == "not an eval dir":
        (root / "empty").mkdir()
        return [*base, "--eval-dir", str(root / "empty")]
    if case == "audio-only run":
        return [*base, "--eval-dir", str(audio_only)]
    if case == "clip without both branches":
        return [*base, "--eval-dir", str(_copy_with_blank_video_row(eval_val, root / "blank", "av1"))]
    if case == "no labels":
        unlabelled = root / "unlabelled.jsonl"
        unlabelled.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "labels"}) + "\n"
                                      for line in manifests["validation"].read_text().splitlines()))
        return [*base, "--eval-dir", str(eval_val), "--manifest", str(unlabelled)]
    if case == "other manifest":
        return [*base, "--eval-dir", str(eval_val), "--manifest", str(manifests["test"])]
    if case == "mismatched classes":
        other = root / "classes"
        shutil.copytree(eval_val, other)
        path = other / "probabilities_audio.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0].replace("Bicycle", "Unicycle"), *lines[1:]]) + "\n")
        return [*base, "--eval-dir", str(other)]
    if case == "no manifest recorded":
        other = root / "nomanifest"
        shutil.copytree(eval_val, other)
        info = json.loads((other / "run_info.json").read_text())
        info["manifest"] = None
        (other / "run_info.json").write_text(json.dumps(info))
        return [*base, "--eval-dir", str(other)]
    raise AssertionError(case)


FIT_ERRORS = {
    "missing eval dir": "no such evaluation folder",
    "not an eval dir": "run_info.json: missing",
    "audio-only run": "probabilities_video.csv: missing",
    "clip without both branches": "lack the audio or the video probabilities (first: av1)",
    "no labels": "has no labels",
    "other manifest": "are not in the manifest",
    "mismatched classes": "other classes",
    "no manifest recorded": "pass --manifest",
}


@pytest.mark.parametrize("case", list(FIT_ERRORS))
def test_fit_bad_inputs_are_one_line_errors(fusion_workflow, uninterrupted, tmp_path, capsys, case):
    from avtag.fusion import main as fusion_main

    _, manifests, eval_val, _, _ = fusion_workflow
    audio_only, _ = uninterrupted
    args = _fit_case(case, tmp_path, eval_val, audio_only, manifests)
    with pytest.raises(SystemExit) as info:
        fusion_main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and FIT_ERRORS[case] in err[0], err
    assert not (tmp_path / f"{case}.json").exists()
