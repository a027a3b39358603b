"""Soundscape generation: labels/events consistent with the audio, split by source
recording, determinism, and CLI errors."""

from __future__ import annotations

import json
import importlib.util

import numpy as np
import pytest
import soundfile as sf

from avtag.data.manifests import read_manifest
from avtag.data.soundscapes import SourceClip, loop_to_length, make_soundscapes, split_by_source, trim_silence
from conftest import PROJECT_ROOT, shared_path

SR = 8000


SMALL = dict(classes=["car_horn", "dog", "siren"], background_classes=["rain", "wind"], sample_rate=SR)


def test_trim_silence_finds_the_true_onset_and_offset():
    signal = np.zeros(SR * 2, np.float32)
    signal[4000:9000] = 0.3 * np.sin(np.arange(5000) * 0.3)
    signal += 1e-5 * np.random.default_rng(0).standard_normal(signal.size).astype(np.float32)  # a -90 dB noise floor
    trimmed, active = trim_silence(signal, SR)
    frame = int(0.02 * SR)
    assert abs(len(trimmed) - 5000) <= 2 * frame
    assert np.sqrt(np.mean(active**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    empty, _ = trim_silence(np.zeros(SR, np.float32), SR)
    assert empty.size == 0


def test_loop_to_length_fills_the_clip_without_gaps():
    piece = np.ones(1000, np.float32)
    looped = loop_to_length(piece, 5000, start=300, crossfade=100)
    assert looped.shape == (5000,)
    np.testing.assert_allclose(looped, 1.0, atol=1e-5)  # linear crossfades of a constant sum to it


def test_split_by_source_never_shares_a_recording():
    clips = [SourceClip(f"{s}-{t}.flac", cat, f"{cat}{s}") for cat in ("a", "b") for s in range(4) for t in "AB"]
    split = split_by_source(clips, 1 / 3, np.random.default_rng(0))
    train = {c.source for c in split["train"]}
    test = {c.source for c in split["test"]}
    assert not train & test and train | test == {c.source for c in clips}
    for cat in ("a", "b"):  # every class present on both sides
        assert any(c.category == cat for c in split["train"]) and any(c.category == cat for c in split["test"])


@pytest.fixture(scope="module")
def soundscapes(tmp_path_factory):
    esc50 = shared_path("data", "esc50")
    out = tmp_path_factory.mktemp("soundscapes")
    return esc50, make_soundscapes(esc50, out, n_train=6, n_test=4, seed=3, snr_db=(25.0, 25.0), **SMALL)


def test_layout_labels_and_events(soundscapes):
    _, result = soundscapes
    assert (result.out_dir / "classes.txt").read_text().split() == ["car_horn", "dog", "siren"]
    for split, count in (("train", 6), ("test", 4)):
        records = read_manifest(result.manifests[split])
        assert len(records) == count
        for record in records:
            assert record.split == split and record.duration == 10.0
            assert 1 <= len(record.events) <= 3
            assert sorted(record.labels) == sorted({e.label for e in record.events})
            assert all(0.0 <= e.onset < e.offset <= 10.0 for e in record.events)
            audio, sr = sf.read(result.out_dir / record.audio)
            assert sr == SR and audio.shape == (10 * SR,) and np.abs(audio).max() <= 1.0


def test_event_spans_hold_the_event_energy(soundscapes):
    """At 25 dB SNR the annotated spans are much louder than the rest of the clip."""
    _, result = soundscapes
    for record in read_manifest(result.manifests["train"]):
        audio, _ = sf.read(result.out_dir / record.audio)
        inside = np.zeros(audio.size, bool)
        for event in record.events:
            inside[int(event.onset * SR):int(event.offset * SR)] = True
        if inside.all():
            continue
        ratio_db = 10 * np.log10(np.mean(audio[inside] ** 2) / np.mean(audio[~inside] ** 2))
        assert ratio_db > 10, record.id
        first = min(record.events, key=lambda e: e.onset)
        start = int(first.onset * SR)
        if start >= SR // 10 and not inside[start - SR // 10:start].any():  # the onset is where the sound starts
            before = np.mean(audio[start - SR // 10:start] ** 2)
            after = np.mean(audio[start:start + SR // 2] ** 2)
            assert after > 3 * before, record.id


def test_train_and_test_never_share_a_source_recording(soundscapes):
    esc50, result = soundscapes
    import csv

    source_of = {r["filename"]: r["src_file"] for r in csv.DictReader((esc50 / "esc50.csv").open())}
    used = {}
    for split in ("train", "test"):
        used[split] = set()
        for record in read_manifest(result.manifests[split]):
            files = record.extra["event_sources"] + [record.extra["background_source"]]
            used[split] |= {source_of[f] for f in files}
    assert used["train"] and used["test"] and not used["train"] & used["test"]
    params = json.loads((result.out_dir / "soundscapes.json").read_text())
    train_sources = {source_of[f] for f in params["sources"]["train"]}
    assert not train_sources & {source_of[f] for f in params["sources"]["test"]}


def test_deterministic_and_test_set_independent_of_n_train(soundscapes, tmp_path):
    esc50, result = soundscapes
    again = make_soundscapes(esc50, tmp_path, n_train=2, n_test=4, seed=3, snr_db=(25.0, 25.0), **SMALL)
    assert again.manifests["test"].read_text() == result.manifests["test"].read_text()
    for record in read_manifest(again.manifests["test"]):
        assert (tmp_path / record.audio).read_bytes() == (result.out_dir / record.audio).read_bytes()
    train = read_manifest(again.manifests["train"])
    assert [r.to_json() for r in train] == [r.to_json() for r in read_manifest(result.manifests["train"])[:2]]


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from avtag.cli import main

    try:
        code = main(["prepare", "soundscapes", *args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    code, _, err = _cli(capsys, "--events-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                        "--n-train", "1", "--n-test", "1")
    assert code == 2 and "no esc50.csv" in err and len(err.strip().splitlines()) == 1
    esc50 = shared_path("data", "esc50")
    code, _, err = _cli(capsys, "--events-dir", str(esc50), "--out", str(tmp_path / "o"), "--n-train", "1",
                        "--n-test", "0", "--classes", "unicorn")
    assert code == 2 and "unicorn" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "train.jsonl").exists()
    code, _, err = _cli(capsys, "--events-dir", str(esc50), "--out", str(tmp_path / "o"), "--n-train", "1",
                        "--n-test", "0", "--snr-db", "10", "0")
    assert code == 2 and "--snr-db" in err
    code, _, err = _cli(capsys, "--events-dir", str(esc50), "--out", str(tmp_path / "o"), "--labels", "dcase",
                        "--classes", "dog")
    assert code == 2 and "no DCASE 2017 event" in err and len(err.strip().splitlines()) == 1


def test_help_describes_every_option_with_its_default(capsys):
    code, out, _ = _cli(capsys, "--help")
    out = " ".join(out.split())
    assert code == 0
    for option in ("--n-train", "--n-validation", "--n-test", "--labels", "--seed", "--snr-db", "--sample-rate"):
        assert option in out
    assert "(default: 400)" in out and "(default: esc50)" in out and "(default: 20000)" in out


def test_cli_writes_three_splits_by_source_and_a_class_file_the_trainer_reads(tmp_path, capsys):
    from avtag.train import TaggingModule

    esc50 = shared_path("data", "esc50")
    code, out, _ = _cli(capsys, "--events-dir", str(esc50), "--out", str(tmp_path), "--n-train", "2",
                        "--n-validation", "2", "--n-test", "1", "--sample-rate", "8000", "--seconds", "4",
                        "--classes", "siren", "dog", "--backgrounds", "rain")
    assert code == 0 and "train: 2 clips" in out and "validation: 2 clips" in out and "test: 1 clips" in out
    assert [len(read_manifest(tmp_path / f"{s}.jsonl")) for s in ("train", "validation", "test")] == [2, 2, 1]
    params = json.loads((tmp_path / "soundscapes.json").read_text())
    sources = {split: {f.split("-")[1] for f in files} for split, files in params["sources"].items()}
    assert set(sources) == {"train", "validation", "test"}
    assert not sources["train"] & sources["validation"] and not sources["train"] & sources["test"]
    assert not sources["validation"] & sources["test"]
    module = TaggingModule(classes=str(tmp_path / "class_labels_indices.csv"), model_args={"conv_channels": [4, 4, 4, 4]})
    assert module.classes == ["dog", "siren"] and module.model.model_args["num_classes"] == 2


def test_n_train_zero_sets_nothing_aside_for_train(tmp_path, capsys):
    esc50 = shared_path("data", "esc50")
    code, out, _ = _cli(capsys, "--events-dir", str(esc50), "--out", str(tmp_path), "--n-train", "0",
                        "--n-validation", "1", "--n-test", "1", "--sample-rate", "8000", "--seconds", "2",
                        "--classes", "siren", "dog", "--backgrounds", "rain")
    assert code == 0 and not (tmp_path / "train.jsonl").exists()
    params = json.loads((tmp_path / "soundscapes.json").read_text())
    assert "train" not in params["sources"]
    index = {row.split(",")[0]: row.split(",")[3] for row in (esc50 / "esc50.csv").read_text().splitlines()[1:]}
    used = [f for files in params["sources"].values() for f in files]
    wanted = [f for f, category in index.items() if category in ("siren", "dog", "rain") and (esc50 / "audio" / f).is_file()]
    assert sorted(used) == sorted(wanted)  # every recording went to validation or test


def test_dcase_labels_name_the_dcase_events(tmp_path, capsys):
    from avtag.data.embeddings import read_class_labels
    from avtag.events import event_names

    esc50 = shared_path("data", "esc50")
    code, out, _ = _cli(capsys, "--events-dir", str(esc50), "--out", str(tmp_path), "--n-train", "4",
                        "--n-validation", "0", "--n-test", "2", "--sample-rate", "8000", "--seconds", "3",
                        "--labels", "dcase", "--backgrounds", "rain")
    assert code == 0
    labels = read_class_labels(tmp_path / "class_labels_indices.csv")
    assert [name for _, name in labels] == ["Police car (siren)", "Car", "Train"]  # DCASE order
    assert dict(labels) == {"/m/04qvtq": "Police car (siren)", "/m/0k4j": "Car", "/m/07jdr": "Train"}
    for record in read_manifest(tmp_path / "train.jsonl"):
        assert record.labels and set(record.labels) <= set(event_names())
        assert {e.label for e in record.events} == set(record.labels)
