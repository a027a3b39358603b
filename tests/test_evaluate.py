"""`python -m avtag.evaluate`: outputs agree with the tagger and the scorers, thresholds
come from the model or a disjoint validation set, never from the evaluated manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avtag.audio.tagger import AudioTagger
from avtag.data.datasets import ClipDataset
from avtag.evaluate import main
from avtag.metrics import read_tag_file
from avtag.thresholds import micro_f1, tune_thresholds

from test_train import TONE_CLASSES, tiny_module, write_tone_split

SAVED_THRESHOLDS = [0.45, 0.5, 0.55, 0.6]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    module = tiny_module()
    module.thresholds = list(SAVED_THRESHOLDS)
    content: dict = {}
    module.on_save_checkpoint(content)
    torch.save(content, root / "model.ckpt")
    return {
        "checkpoint": root / "model.ckpt",
        "test": write_tone_split(root, "test", 12, seed=5, events=True),
        "val": write_tone_split(root, "val", 12, seed=6),
        "root": root,
    }


def _probabilities(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with path.open() as fh:
        rows = list(csv.reader(fh))
    return rows[0], [r[0] for r in rows[1:]], np.array([[float(x) for x in r[1:]] for r in rows[1:]])


def test_outputs_match_the_tagger_and_the_scorers(setup, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["test"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| class |" in printed and "micro P" in printed
    assert {p.name for p in out.iterdir()} == {"predictions.csv", "probabilities.csv", "thresholds.json", "metrics.json", "per_class.md", "failures.csv"}

    header, ids, probs = _probabilities(out / "probabilities.csv")
    assert header == ["id", *TONE_CLASSES]
    tagger = AudioTagger.from_pretrained(setup["checkpoint"]).eval()
    dataset = ClipDataset(setup["test"], frontend=tagger.frontend, classes=TONE_CLASSES)
    assert ids == [r.id for r in dataset.records]
    with torch.no_grad():
        expected = tagger(torch.stack([dataset[i]["waveform"] for i in range(len(dataset))])).clip_probs.numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)

    decisions = probs >= np.array(SAVED_THRESHOLDS)
    predicted = read_tag_file(out / "predictions.csv")
    assert {k: sorted(v) for k, v in predicted.items()} == {
        rid: sorted(TONE_CLASSES[c] for c in np.flatnonzero(row)) for rid, row in zip(ids, decisions, strict=True)
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["micro"]["f1"] == pytest.approx(micro_f1(dataset.targets, probs, np.array(SAVED_THRESHOLDS)))
    assert [metrics["per_class"][c]["threshold"] for c in TONE_CLASSES] == SAVED_THRESHOLDS
    assert json.loads((out / "thresholds.json").read_text())["thresholds"] == SAVED_THRESHOLDS
    for key in ("mAP", "mAUC", "d_prime", "localisation"):
        assert key in metrics
    assert 0.0 <= metrics["localisation"]["segment_f1"] <= 1.0


def test_thresholds_tuned_on_a_disjoint_validation_manifest(setup, tmp_path):
    out = tmp_path / "out"
    args = ["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["test"]), "--out", str(out)]
    assert main(args + ["--thresholds-from", str(setup["val"])]) == 0
    saved = json.loads((out / "thresholds.json").read_text())
    assert "tuned on" in saved["source"]
    tagger = AudioTagger.from_pretrained(setup["checkpoint"]).eval()
    validation = ClipDataset(setup["val"], frontend=tagger.frontend, classes=TONE_CLASSES)
    with torch.no_grad():
        val_probs = tagger(torch.stack([validation[i]["waveform"] for i in range(len(validation))])).clip_probs
    expected = tune_thresholds(validation.targets, val_probs.double().numpy()).thresholds
    np.testing.assert_allclose(saved["thresholds"], expected, rtol=1e-5)

    (tmp_path / "thr.json").write_text(json.dumps(dict(zip(TONE_CLASSES, [0.1, 0.2, 0.3, 0.4], strict=True))))
    assert main(args + ["--thresholds-from", str(tmp_path / "thr.json")]) == 0
    assert json.loads((out / "thresholds.json").read_text())["thresholds"] == [0.1, 0.2, 0.3, 0.4]


def test_refuses_to_tune_on_the_evaluated_clips(setup, tmp_path, capsys):
    overlapping = setup["root"] / "overlap.jsonl"  # beside the audio its relative paths name
    lines = setup["val"].read_text().splitlines() + setup["test"].read_text().splitlines()[:1]
    overlapping.write_text("\n".join(lines) + "\n")
    for source, message in ((setup["test"], "refusing to tune"), (overlapping, "also evaluated")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["test"]),
                  "--out", str(tmp_path / "out"), "--thresholds-from", str(source)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err


def test_no_localisation_without_strong_labels(setup, tmp_path):
    out = tmp_path / "out"
    assert main(["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["val"]), "--out", str(out)]) == 0
    assert "localisation" not in json.loads((out / "metrics.json").read_text())


def test_bad_inputs_exit_2(setup, tmp_path, capsys):
    cases = [
        ["--checkpoint", str(tmp_path / "none.ckpt"), "--manifest", str(setup["test"])],
        ["--checkpoint", str(setup["checkpoint"]), "--manifest", str(tmp_path / "none.jsonl")],
        ["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["test"]), "--thresholds-from", str(tmp_path / "x.json")],
    ]
    for args in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(args + ["--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error:")


def test_a_corrupt_clip_costs_only_that_clip(setup, tmp_path):
    """One undecodable file: listed in failures.csv, no tag (its labels are misses), left
    out of the ranking scores; the other clips are scored exactly as without it."""
    from avtag.data.manifests import read_manifest, write_manifest

    records = read_manifest(setup["test"])
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    broken = [*records[:-1], records[-1]]
    broken[-1] = type(records[-1]).from_json(records[-1].to_json() | {"audio": str(bad)})
    folder = setup["test"].parent  # the records' audio paths are relative to it
    manifest = write_manifest(broken, folder / "test_with_corrupt.jsonl")
    reference = write_manifest(records[:-1], folder / "test_without_last.jsonl")
    for name, path in (("with", manifest), ("without", reference)):
        assert main(["--checkpoint", str(setup["checkpoint"]), "--manifest", str(path), "--out", str(tmp_path / name)]) == 0

    with (tmp_path / "with" / "failures.csv").open() as fh:
        failures = list(csv.DictReader(fh))
    assert [f["clip_id"] for f in failures] == [records[-1].id] and "corrupt.wav" in failures[0]["reason"]
    with_bad = json.loads((tmp_path / "with" / "metrics.json").read_text())
    without = json.loads((tmp_path / "without" / "metrics.json").read_text())
    assert with_bad["failed_clips"] == 1 and with_bad["clips"] == len(records)
    assert with_bad["mAP"] == pytest.approx(without["mAP"])  # ranking over the decoded clips only
    missed = len(records[-1].labels)
    per_class_fn = sum(c["fn"] for c in with_bad["per_class"].values())
    assert per_class_fn == sum(c["fn"] for c in without["per_class"].values()) + missed
    assert not read_tag_file(tmp_path / "with" / "predictions.csv").get(records[-1].id)


def test_every_evaluation_prints_its_baselines_and_absent_classes(setup, tmp_path, capsys):
    from avtag.metrics import baseline_scores

    out = tmp_path / "out"
    assert main(["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["test"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    targets = ClipDataset(setup["test"], sample_rate=8000, clip_seconds=2.0, classes=TONE_CLASSES).targets > 0.5
    expected = baseline_scores(targets, TONE_CLASSES)
    assert metrics["baselines"]["label_prior"]["micro_f1"] == pytest.approx(expected.prior_micro_f1)
    assert metrics["baselines"]["all_positive"]["micro_f1"] == pytest.approx(expected.all_positive_micro_f1)
    assert f"label prior micro-F1 {expected.prior_micro_f1:.3f}" in printed and "all positive micro-F1" in printed
    assert "*baseline: label prior*" in (out / "per_class.md").read_text()
    assert metrics["macro_f1_absent_classes"] == expected.absent_classes


@pytest.mark.parametrize("text", ['{"thresholds": [NaN, 0.5, 0.5, 0.5]}', '{"thresholds": [0.5, "x", 0.5, 0.5]}',
                                  '{"thresholds": [0.5, 0.5]}', '[1, 2]', '{"thresholds": [2.0, 0.5, 0.5, 0.5]}'])
def test_a_bad_thresholds_file_is_one_line(setup, tmp_path, capsys, text):
    bad = tmp_path / "thresholds.json"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(setup["checkpoint"]), "--manifest", str(setup["test"]), "--out", str(tmp_path / "o"),
              "--thresholds-from", str(bad)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0 and "thresholds.json" in err
