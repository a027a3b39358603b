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
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag.data.manifests import ClipRecord, read_manifest, write_manifest
from avtag.events import event_names
from avtag.fusion import FusionModel
from avtag.metrics import read_tag_file
from tests.conftest import PROJECT_ROOT, mux_mono_audio, shared_path
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
        mux_mono_audio(container, audio, (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32), sample_rate)
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
    assert "tuned with another" not in proc.stderr  # same models as the tuning run
    import hashlib

    info = json.loads((out / "run_info.json").read_text())  # the fusion file is part of the run's identity
    assert info["fusion"]["sha256"] == hashlib.sha256(fusion_path.read_bytes()).hexdigest()
    assert info["fusion"]["method"] == "search" and info["fusion"]["note"] is None
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


# --------------------------------------------------------------------------- issue 9, 10, 11 seams

ESC_CLASSES = ["Car", "Train", "Dog", "Rain", "Siren", "Church bells", "Crackling fire", "Helicopter"]


def export_tagger(out_dir: Path, classes: list[str] | None = None, thresholds: float = 0.5,
                  metadata: dict | None = None) -> Path:
    """An untrained (seeded) CRNN export with its own class list and metadata."""
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger

    names = classes or event_names()
    torch.manual_seed(0)
    tagger = AudioTagger(build_model("crnn", num_classes=len(names)), LogMelFrontEnd.from_preset("crnn"),
                         classes=names, thresholds=[thresholds] * len(names), metadata=metadata or {})
    return tagger.export(out_dir)


def tone_manifest(root: Path, name: str, ids: list[str], split: str, labels: list[list[str]]) -> Path:
    records = []
    for i, (clip, clip_labels) in enumerate(zip(ids, labels)):
        path = root / f"{clip}.wav"
        tone = np.sin(2 * np.pi * (250 + 170 * i) * np.arange(2 * 16000) / 16000)
        sf.write(path, (0.3 * tone).astype(np.float32), 16000)
        records.append(ClipRecord(id=clip, labels=clip_labels, audio=path.name, split=split))
    return write_manifest(records, root / name)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def validation_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    names = event_names()
    return tone_manifest(root, "validation.jsonl", ["v0", "v1", "v2"], "validation",
                         [[names[0]], [names[1], names[9]], [names[9]]])


@pytest.mark.parametrize("recorded_ids", [True, False])
def test_a_trained_checkpoint_is_accepted_on_a_disjoint_validation_manifest(validation_manifest, tmp_path,
                                                                            recorded_ids):
    """Issue 9 item 1: the guard compares clip ids, never split names (avtag.train's metadata says
    "validation", and so does the manifest's split field)."""
    metadata = {"thresholds": "tuned on the validation set after this epoch (004 section 3.3)",
                "validation": {"val_micro_f1": 0.4}}
    if recorded_ids:
        metadata["thresholds_tuned_on"] = {"split": "validation", "clip_ids": ["other0", "other1"]}
    checkpoint = export_tagger(tmp_path / "trained", metadata=metadata)
    proc = run_eval("--manifest", str(validation_manifest), "--out", str(tmp_path / "o"), "--audio-checkpoint",
                    str(checkpoint), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    expected = ("no clip shared with the clip ids recorded in the checkpoint" if recorded_ids else
                "does not record which clips its thresholds were tuned on: overlap not checked")
    assert expected in proc.stdout
    info = json.loads((tmp_path / "o" / "run_info.json").read_text())
    assert info["splits"] == ["validation"] and info["systems"] == ["audio"]


def test_a_checkpoint_tuned_on_these_clips_is_marked_not_held_out(validation_manifest, tmp_path):
    """Fitting fusion needs the tuning clips evaluated; the run says plainly they are not held-out."""
    metadata = {"thresholds_tuned_on": {"split": "validation", "clip_ids": ["other0", "v1"]}}
    checkpoint = export_tagger(tmp_path / "trained", metadata=metadata)
    proc = run_eval("--manifest", str(validation_manifest), "--out", str(tmp_path / "o"), "--audio-checkpoint",
                    str(checkpoint), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    assert "NOT HELD-OUT: 1 clips of this manifest (first: v1) were used to tune the audio checkpoint" in proc.stdout
    info = json.loads((tmp_path / "o" / "run_info.json").read_text())
    assert info["threshold_source_check"].startswith("NOT HELD-OUT")


def test_baselines_are_printed_and_written_next_to_the_scores(validation_manifest, tmp_path):
    """Issue 9 item 6: label-prior and all-positive baselines; classes without positives warned."""
    checkpoint = export_tagger(tmp_path / "crnn")
    proc = run_eval("--manifest", str(validation_manifest), "--out", str(tmp_path / "o"), "--audio-checkpoint",
                    str(checkpoint), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    assert "label-prior micro f1" in proc.stdout and "all-positive micro f1" in proc.stdout
    assert "14 of 17 classes have no positive clip" in proc.stderr
    audio = json.loads((tmp_path / "o" / "metrics.json").read_text())["systems"]["audio"]
    # 3 clips x 17 classes, 4 labels: all-positive P = 4/51, R = 1; the prior's best constant set is
    # {names[9], names[0], names[1]}: tp 4, fp 5, fn 0 (F1 8/13; {names[9]} alone: 4/7, two classes: 6/10)
    assert audio["baselines"]["all_positive"]["precision"] == pytest.approx(4 / 51)
    assert audio["baselines"]["all_positive"]["recall"] == 1.0
    prior = audio["baselines"]["label_prior"]
    names = event_names()
    assert prior["classes"] == [names[9], names[0], names[1]] and prior["f1"] == pytest.approx(8 / 13)
    assert len(audio["classes_without_positives"]) == 14


def test_tagging_baselines_by_hand():
    from avtag.evaluation.baselines import tagging_baselines

    targets = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    out = tagging_baselines(targets, ["a", "b", "c"])
    assert out["all_positive"]["precision"] == pytest.approx(5 / 12) and out["all_positive"]["recall"] == 1.0
    # {a}: tp 3, fp 1, fn 2 -> 6/9; {a, b}: tp 5, fp 3, fn 0 -> 10/13 (best); all: 10/17
    assert out["label_prior"]["classes"] == ["a", "b"] and out["label_prior"]["f1"] == pytest.approx(10 / 13)
    assert out["label_prior"]["mAP"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # class c has no positives


def test_any_class_list_audio_only(tmp_path):
    """Issue 9 item 2: an 8-class model is scored on its own classes, and the files name them."""
    checkpoint = export_tagger(tmp_path / "esc", classes=ESC_CLASSES, thresholds=0.4)
    manifest = tone_manifest(tmp_path, "test.jsonl", ["a", "b"], "test", [["Dog"], ["Rain", "Car"]])
    out = tmp_path / "o"
    proc = run_eval("--manifest", str(manifest), "--out", str(out), "--audio-checkpoint", str(checkpoint),
                    "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    with (out / "probabilities_audio.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header == ["id", *ESC_CLASSES]
    metrics = json.loads((out / "metrics.json").read_text())["systems"]["audio"]
    assert list(metrics["class_wise"]) == ESC_CLASSES and metrics["labels_outside_classes"] == 0
    assert "Church bells" in proc.stdout


def test_prediction_files_spell_clip_names_one_way():
    """Issue 9 item 9: DCASE names in the organisers' spelling only when every id is one."""
    from avtag.evaluation.writers import prediction_names

    dcase = "Y-5QrBL6MzLg_60.000_70.000"
    assert prediction_names([dcase]) == {dcase: "-5QrBL6MzLg_60.000_70.000.wav"}
    assert prediction_names([dcase, "seoul"]) == {dcase: dcase, "seoul": "seoul"}


def test_probability_cells_round_trip_in_one_format():
    from avtag.evaluation.writers import format_probability, parse_probability

    assert format_probability(0.25) == "0.250000" and format_probability(float("nan")) == ""
    assert parse_probability("0.250000") == 0.25 and np.isnan(parse_probability(""))
    for bad in ("nan", "inf", "1.5", "-0.1", "x"):
        with pytest.raises(ValueError):
            parse_probability(bad)


def test_changed_settings_and_changed_clips_are_re_evaluated(tmp_path):
    """Issue 10 item 4: an edited clip_seconds, and a manifest id that now points to another file."""
    checkpoint = export_tagger(tmp_path / "crnn")
    names = event_names()
    manifest = tone_manifest(tmp_path, "test.jsonl", ["c0", "c1", "c2"], "test", [[names[0]]] * 3)
    out = tmp_path / "o"
    args = ("--manifest", str(manifest), "--out", str(out), "--audio-checkpoint", str(checkpoint), "--workers", "0")
    first = run_eval(*args)
    assert first.returncode == 0 and "processed 3 clips" in first.stderr, first.stderr
    before = read_probabilities(out / "probabilities_audio.csv")

    config = json.loads((checkpoint / "config.json").read_text())
    config["frontend"]["clip_seconds"] = 1.0
    (checkpoint / "config.json").write_text(json.dumps(config))
    second = run_eval(*args)
    assert second.returncode == 0, second.stderr
    assert "other settings (the audio branch (frontend" in second.stderr and "processed 3 clips" in second.stderr
    assert (out / "results.replaced.jsonl").is_file()
    assert len((out / "results.jsonl").read_text().splitlines()) == 3  # never a mix of old and new

    lines = manifest.read_text().splitlines()
    moved = json.loads(lines[1])
    moved["audio"] = "c2.wav"  # c1 now points to another file
    manifest.write_text("\n".join([lines[0], json.dumps(moved), lines[2]]) + "\n")
    third = run_eval(*args)
    assert third.returncode == 0, third.stderr
    assert "1 clips changed on disk" in third.stderr and "processed 1 clips" in third.stderr
    after = read_probabilities(out / "probabilities_audio.csv")
    np.testing.assert_allclose(after["c1"], after["c2"], atol=1e-6)
    assert not np.allclose(before["c1"], before["c2"], atol=1e-3)
    assert not list(out.glob(".*.tmp"))  # every output went through a temp file + rename


@pytest.mark.parametrize("case", ["wrong type", "nan", "out of range"])
def test_broken_fusion_files_are_one_line_before_any_model_loads(workspace, tmp_path, case):
    """Issue 10 items 7 and 10 through the CLI a user runs."""
    root, manifest, checkpoint = workspace
    data = FusionModel.paper_default([0.5] * 17, [0.5] * 17).to_json()
    if case == "wrong type":
        data["tuned_on"] = "validation"
    elif case == "nan":
        data["thresholds"][3] = float("nan")
    else:
        data["audio_weights"][0] = 2.0
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(data, allow_nan=True))
    proc = run_eval("--manifest", str(manifest), "--out", str(tmp_path / "o"), "--audio-checkpoint",
                    str(checkpoint), "--fusion", str(path))
    assert_one_line_error(proc, str(path))


def test_bad_video_config_is_one_line(tmp_path):
    """Issue 11 item 1: --video-config goes through avtag.video.config.load_video_config."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "x.mp4", 1.0, shade=10, tone_hz=400)
    config = tmp_path / "video.yaml"
    config.write_text("fps: 1.0\nnot_a_setting: 3\n")
    proc = run_eval("--clips-dir", str(clips), "--out", str(tmp_path / "o"), "--video-config", str(config))
    assert_one_line_error(proc, "not_a_setting", str(config))


def write_silent_video(path: Path, seconds: float) -> Path:
    """A small video with no audio stream at all."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=12)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * 12)):
            frame = np.full((120, 160, 3), (7 * i) % 256, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return path


def test_fused_on_shared_classes_with_a_video_config_and_a_clip_without_sound(tmp_path):
    """Issue 9 items 2 and 9, issue 11 items 1 and 5: an 8-class model fused on the classes it shares
    with the video branch; a clip whose 'audio' has no audio stream is scored by video alone; the
    video branch runs with --video-config; paper-default fusion says it is untuned."""
    checkpoint = export_tagger(tmp_path / "esc", classes=ESC_CLASSES)
    sound = write_clip(tmp_path / "sound.mp4", 2.0, shade=30, tone_hz=500)
    mute = write_silent_video(tmp_path / "mute.mp4", 2.0)
    manifest = write_manifest([ClipRecord(id="sound", labels=["Car"], video=sound.name, split="test"),
                               ClipRecord(id="mute", labels=["Train"], audio=mute.name, video=mute.name,
                                          split="test")], tmp_path / "test.jsonl")
    config = tmp_path / "video.yaml"
    config.write_text("fps: 1.0\nmax_side: 160\n")
    out = tmp_path / "o"
    proc = run_eval("--manifest", str(manifest), "--out", str(out), "--audio-checkpoint", str(checkpoint),
                    "--video-config", str(config), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    entries = {e["id"]: e for e in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert entries["mute"]["status"] == "ok" and entries["mute"]["audio"] is None
    assert len(entries["mute"]["video"]) == 17 and len(entries["sound"]["audio"]) == len(ESC_CLASSES)
    assert any("no usable sound track" in n for n in entries["mute"]["notes"])
    info = json.loads((out / "run_info.json").read_text())
    shared = [c for c in ESC_CLASSES if c in event_names()]
    assert shared == ["Car", "Train"] and info["classes"]["fused"] == shared
    assert info["models"]["video"]["fps"] == 1.0 and info["models"]["video"]["max_side"] == 160
    assert "untuned" in info["fusion"]["note"] and "untuned weights" in proc.stdout
    with (out / "probabilities_fused.csv").open() as fh:
        fused = list(csv.reader(fh))
    assert fused[0] == ["id", *shared]
    mute_row = [float(v) for v in fused[2][1:]]
    video = dict(zip(event_names(), entries["mute"]["video"]))
    np.testing.assert_allclose(mute_row, [video[c] for c in shared], atol=1e-6)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_without_worker_tracebacks(workspace, tmp_path):
    """Issue 10 item 10: workers ignore SIGINT; the parent ends them and prints one line."""
    import time

    root, manifest, checkpoint = workspace
    # 35 clips (the workspace's 7, five times over), so that the run is still busy when Ctrl-C comes
    # even on a loaded machine: with 7 it could finish between the first journal line and the signal
    records = read_manifest(manifest)
    many = [ClipRecord.from_json(dict(r.to_json(), id=f"Y{copy}{r.id[2:]}")) for copy in range(5) for r in records]
    manifest = write_manifest(many, root / "ctrl_c.jsonl")
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT))
    with tempfile.TemporaryFile("w+") as err:
        # a terminal's foreground job: SIGINT at its default, even when this suite was started in the
        # background (`cmd &` from a script), where SIGINT is ignored and a child inherits that
        proc = subprocess.Popen([sys.executable, str(SCRIPT), "--manifest", str(manifest), "--out", str(out),
                                 "--audio-checkpoint", str(checkpoint), "--workers", "2", "--chunk", "1",
                                 "--no-video", "--quiet"], stdout=subprocess.DEVNULL, stderr=err, text=True,
                                cwd=PROJECT_ROOT, env=env, start_new_session=True, preexec_fn=_sigint_default)
        try:
            deadline = time.monotonic() + 240
            journal = out / "results.jsonl"
            while time.monotonic() < deadline and proc.poll() is None:
                if journal.exists() and journal.read_text().count("\n") >= 1:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, "finished before it could be interrupted"
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
            code = proc.wait(timeout=60)
            time.sleep(1.0)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        err.seek(0)
        stderr = err.read()
    assert code == 130, stderr
    assert stderr.strip() == "interrupted", stderr


def _signal_set(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal masks from /proc")
def test_decode_workers_never_see_ctrl_c_even_while_starting():
    """Spawned with SIGINT blocked (inherited), then ignored: no start-up window where Ctrl-C kills one."""
    from avtag.evaluation.decoding import start_workers, stop_workers

    sigint = 1 << (signal.SIGINT - 1)
    executor = start_workers(2)
    try:
        processes = list(executor._processes.values())
        assert len(processes) == 2  # all spawned by start_workers, none later inside the loop
        for process in processes:  # blocked from the first instruction, before any import
            assert _signal_set(process.pid, "SigBlk") & sigint
        assert not _signal_set(os.getpid(), "SigBlk") & sigint  # the caller's mask is restored
        executor.submit(int, 0).result(timeout=120)  # initialised: SIGINT now ignored as well
        for process in processes:
            os.kill(process.pid, signal.SIGINT)
        assert executor.submit(int, 7).result(timeout=60) == 7 and all(p.is_alive() for p in processes)
    finally:
        stop_workers(executor, terminate=True)


@pytest.fixture
def sigint_as_a_terminal():
    """SIGINT raising KeyboardInterrupt, as in a terminal, whatever this suite was started from."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_swallowed_ctrl_c_still_ends_the_block_as_interrupted(sigint_as_a_terminal):
    """What exit 0 after part of a run would need: a KeyboardInterrupt caught inside the loop."""
    from avtag.errors import interrupts_are_final

    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_are_final():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)
            except KeyboardInterrupt:
                pass  # e.g. a library's broad except
            done.append("continued")
    assert done == ["continued"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_are_final():  # nothing received: nothing raised
        done.append("quiet")
    assert done[-1] == "quiet"


def test_a_background_job_keeps_ignoring_ctrl_c():
    """`avtag eval-batch ... &` from a script inherits SIGINT ignored: the guard leaves that alone."""
    from avtag.errors import interrupts_are_final

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_are_final():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_fit_warns_on_few_clips_and_labels_re_tuned_scores(fusion_workflow, tmp_path, capsys):
    """Issue 9 item 9 and issue 11 item 5 (rule by default) through `avtag fusion fit`."""
    from avtag.cli import main as avtag_main

    _, _, eval_val, _, _ = fusion_workflow
    assert avtag_main(["fusion", "fit", "--eval-dir", str(eval_val), "--out", str(tmp_path / "f.json")]) == 0
    captured = capsys.readouterr()
    assert "warning: tuning fusion on only 4 clips (fewer than 50)" in captured.err
    assert "have no validation positives" in captured.err
    assert "micro-F1 with thresholds re-tuned on these clips" in captured.out
    assert FusionModel.load(tmp_path / "f.json").method == "rule"
