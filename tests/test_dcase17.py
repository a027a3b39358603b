"""DCASE 2017 Task 4 list parsing, clip ids, the balanced validation split and audio packs."""

from __future__ import annotations

import csv
import multiprocessing
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from avtag.data.dcase17 import (
    VALIDATION_SIZE,
    balanced_validation_split,
    canonical_clip_id,
    class_counts,
    find_audio_files,
    load_dcase17,
    official_file_name,
    parse_clip_id,
    prepare_dcase17,
    read_clip_list,
    read_strong_groundtruth,
    split_label_list,
)
from avtag.data.manifests import ClipRecord, read_manifest
from avtag.data.pack import PackReader, write_pack
from avtag.errors import InputFileError
from avtag.events import dcase17_events, event_names


@pytest.fixture(scope="module")
def official_dir():
    return shared_path("data", "dcase17")


@pytest.fixture(scope="module")
def splits(official_dir):
    return load_dcase17(official_dir, seed=0)


def make_mini_official_dir(official_dir: Path, target: Path, per_class: int = 12) -> Path:
    """A small copy (in a tmp folder) of the official layout: ``per_class`` training rows per
    event, the full testing/evaluation ground truth, so end-to-end tests stay fast."""
    target.mkdir(parents=True, exist_ok=True)
    mids = {e.mid: 0 for e in dcase17_events()}
    keep = []
    with (official_dir / "training_set.csv").open(newline="") as fh:
        for line in fh:
            row_mids = next(csv.reader([line]))[4].split(",")
            if any(mids[m] < per_class for m in row_mids):
                keep.append(line)
                for m in row_mids:
                    mids[m] += 1
    (target / "training_set.csv").write_text("".join(keep), newline="")
    release = target / "groundtruth_release"
    release.mkdir(exist_ok=True)
    for name in ("testing_set.csv", "duration_of_files_in_testing_set.csv"):
        shutil.copy(official_dir / name, target / name)
    for path in (official_dir / "groundtruth_release").glob("*_set.csv"):
        if "training" not in path.name:
            shutil.copy(path, release / path.name)
    return target


@pytest.fixture(scope="module")
def mini_official_dir(official_dir, tmp_path_factory):
    return make_mini_official_dir(official_dir, tmp_path_factory.mktemp("official"))


# ----------------------------------------------------------------------------- clip ids


@pytest.mark.parametrize(
    "name",
    [
        "Y-5QrBL6MzLg_60.000_70.000",
        "-5QrBL6MzLg_60.000_70.000",
        "-5QrBL6MzLg_60.000_70.000.wav",
        "Y-5QrBL6MzLg_60.000_70.000.flac",
        "some/folder/-5QrBL6MzLg_60_70.wav",
        " Y-5QrBL6MzLg_60.0_70.00.wav ",
    ],
)
def test_every_official_spelling_maps_to_the_canonical_id(name):
    assert canonical_clip_id(name) == "Y-5QrBL6MzLg_60.000_70.000"


def test_ids_that_start_with_y_keep_it():
    # "YXMLFejUzJs" is a real 11-character training id that itself starts with Y
    assert canonical_clip_id("YXMLFejUzJs_30.000_40.000") == "YYXMLFejUzJs_30.000_40.000"
    assert canonical_clip_id("YYXMLFejUzJs_30.000_40.000.wav") == "YYXMLFejUzJs_30.000_40.000"
    assert official_file_name("YYXMLFejUzJs_30.000_40.000") == "YXMLFejUzJs_30.000_40.000.wav"


@pytest.mark.parametrize("name", ["-5QrBL6MzLg_60.000_70.0002", "short_1.000_2.000", "notaclip.wav", "-5QrBL6MzLg_70.000_60.000"])
def test_near_misses_are_not_clip_ids(name):
    assert parse_clip_id(name) is None
    with pytest.raises(ValueError):
        canonical_clip_id(name)


def test_label_aware_split_keeps_labels_with_commas():
    text = "Train horn,Air horn, truck horn,Train"
    assert split_label_list(text) == ["Train horn", "Air horn, truck horn", "Train"]
    assert split_label_list("Fire engine, fire truck (siren)") == ["Fire engine, fire truck (siren)"]
    with pytest.raises(ValueError, match="unknown label"):
        split_label_list("Train horn,Tractor")


# ----------------------------------------------------------------------------- official files


def test_quoted_multilabel_rows_parse_with_the_comma_label(official_dir):
    records = {r.id: r for r in read_clip_list(official_dir / "testing_set.csv")}
    assert len(records) == 488
    assert records["Y-Gbohom8C4Q_30.000_40.000"].labels == ["Train horn", "Air horn, truck horn", "Train"]
    counts = class_counts(records.values())
    assert counts["Air horn, truck horn"] == 30  # testing_set_num_files_per_class.csv
    assert counts["Car"] == 60 and counts["Truck"] == 60


def test_split_sizes_and_per_class_counts_match_the_official_tables(splits, official_dir):
    # validation: 1,142 positives (67-68 a class) in 1,042 clips, multi-label clips included
    assert {k: len(v) for k, v in splits.items()} == {"train": 51172 - 1042, "validation": 1042, "test": 488, "evaluation": 1103}
    training = class_counts(splits["train"] + splits["validation"])
    with (official_dir / "training_set_num_files_per_class.csv").open(newline="") as fh:
        official = {name: int(n) for name, n in csv.reader(fh)}
    assert training == {name: official[name] for name in event_names()}


def test_strong_labels_give_spans_and_not_audible_rows_keep_weak_labels(splits, official_dir):
    labels, events = read_strong_groundtruth(official_dir / "groundtruth_release" / "groundtruth_strong_label_evaluation_set.csv")
    not_audible = [cid for cid, names in labels.items() if not any(e.label in names for e in events.get(cid, []))]
    assert not_audible, "the evaluation set has 0/0 rows"
    evaluation = {r.id: r for r in splits["evaluation"]}
    for cid in not_audible[:20]:
        assert set(labels[cid]) <= set(evaluation[cid].labels)
    for record in splits["test"] + splits["evaluation"]:
        for span in record.events:
            assert span.label in record.labels and 0 <= span.onset < span.offset <= 10.5
    assert sum(len(r.events) for r in splits["test"]) == 688 - 36  # 36 rows are 0/0 in some spelling
    spans = [e for e in evaluation["Y-JMT0mK0Dbg_30.000_40.000"].events]
    assert spans and spans[0].label == "Train horn" and spans[0].onset == pytest.approx(0.223)


def test_durations_come_from_the_durations_file(splits):
    test = {r.id: r for r in splits["test"]}
    assert test["Y02u3P99INjs_8.000_18.000"].duration == pytest.approx(9.345306)
    assert all(r.split == "train" for r in splits["train"][:10])


def test_missing_official_file_is_a_one_line_error(tmp_path):
    with pytest.raises(InputFileError, match="training_set.csv"):
        load_dcase17(tmp_path)
    with pytest.raises(InputFileError, match="not found"):
        load_dcase17(tmp_path / "absent")


def test_unknown_mid_is_reported_with_its_line(tmp_path):
    bad = tmp_path / "training_set.csv"
    bad.write_text('-5QrBL6MzLg,60.000,70.000,"Train horn,Train","/m/0284vy3,/m/xxxx"\r\n')
    with pytest.raises(InputFileError, match="line 1: unknown MID /m/xxxx"):
        read_clip_list(bad)


# ----------------------------------------------------------------------------- validation split


def test_validation_split_is_balanced_disjoint_and_reproducible(splits):
    """On the real lists: 67-68 positives per class, multi-label clips at their training share."""
    from avtag.data.dcase17 import split_figures

    validation_ids = {r.id for r in splits["validation"]}
    assert not validation_ids & {r.id for r in splits["train"]}
    counts = class_counts(splits["validation"])
    assert set(counts.values()) <= {67, 68} and sum(counts.values()) == VALIDATION_SIZE
    figures = split_figures(splits["validation"])
    training = split_figures(splits["train"] + splits["validation"])
    assert training["multi_label_share"] == pytest.approx(0.0906, abs=0.001)  # 4,638 of 51,172
    assert figures["multi_label_share"] == pytest.approx(training["multi_label_share"], abs=0.015)
    assert figures["labels_per_clip"][2] > 50 and figures["labels_per_clip"].get(3, 0) > 0  # not single-label only
    assert figures["clips"] == len(validation_ids) < VALIDATION_SIZE

    training = sorted(splits["train"] + splits["validation"], key=lambda r: r.id)
    train, validation = balanced_validation_split(training, seed=0)
    assert len(train) + len(validation) == len(training) == 51172
    _, again = balanced_validation_split(training, seed=0)
    _, other = balanced_validation_split(training, seed=1)
    assert [r.id for r in again] == [r.id for r in validation]
    assert {r.id for r in other} != {r.id for r in validation}
    assert set(class_counts(other).values()) <= {67, 68}


def test_validation_split_is_made_from_the_clips_present(official_dir):
    """12% of the training clips missing: the split still holds 67-68 positives per class, all present."""
    import random

    from avtag.data.dcase17 import load_dcase17, read_clip_list

    training = read_clip_list(official_dir / "training_set.csv")
    rng = random.Random(0)
    present = {r.id for r in training if rng.random() > 0.12}
    splits = load_dcase17(official_dir, present=present)
    assert {r.id for r in splits["validation"]} <= present
    assert set(class_counts(splits["validation"]).values()) <= {67, 68}
    assert len(splits["train"]) + len(splits["validation"]) == 51172


def test_validation_split_handles_multilabel_pools():
    labels = ["a", "b", "c"]
    records = [ClipRecord(id=f"c{i}", labels=["a", "b"]) for i in range(20)]
    records += [ClipRecord(id=f"s{i}", labels=["c"]) for i in range(20)]
    records += [ClipRecord(id=f"a{i}", labels=["a"]) for i in range(20)]
    _, validation = balanced_validation_split(records, size=12, seed=3, classes=labels)
    counts = class_counts(validation, labels)
    # 4 positives a class; "b" only comes with "a", so filling it overfills "a" by one
    assert counts == {"a": 5, "b": 4, "c": 4}
    assert sum(len(r.labels) > 1 for r in validation) == 4


# ----------------------------------------------------------------------------- prepare + packs


def test_prepare_writes_manifests_with_audio_paths(tmp_path, mini_official_dir):
    import soundfile

    audio = tmp_path / "audio" / "nested"
    audio.mkdir(parents=True)
    soundfile.write(audio / "-5QrBL6MzLg_60.000_70.000.wav", np.zeros(800, np.float32), 8000)
    found = find_audio_files(tmp_path / "audio")
    assert list(found) == ["Y-5QrBL6MzLg_60.000_70.000"]
    out = tmp_path / "manifests"
    splits = prepare_dcase17(mini_official_dir, audio_dir=tmp_path / "audio", out_dir=out, validation_size=34)
    test = {r.id: r for r in read_manifest(out / "test.jsonl")}
    assert test["Y-5QrBL6MzLg_60.000_70.000"].audio == "../audio/nested/-5QrBL6MzLg_60.000_70.000.wav"
    assert sum(r.audio is not None for r in test.values()) == 1
    validation = read_manifest(out / "validation.jsonl")
    assert sum(class_counts(validation).values()) >= 34 and min(class_counts(validation).values()) >= 2  # 34 positives
    assert len(read_manifest(out / "train.jsonl")) == len(splits["train"]) > 100


def _read_in_child(reader: PackReader, key: str, queue) -> None:
    samples, sr = reader.read(key)
    queue.put((samples.tolist(), sr))


def test_pack_round_trip_and_worker_safety(tmp_path):
    rng = np.random.default_rng(0)
    clips = {"Ya_0.000_10.000": rng.uniform(-1, 1, 1000).astype(np.float32), "Yb": np.array([1.0, -1.0, 0.0, 2.0])}
    path = write_pack(tmp_path / "p.h5", clips.items(), sample_rate=16000)
    reader = PackReader(path)
    assert len(reader) == 2 and reader.keys() == list(clips) and reader.sample_rate == 16000
    samples, sr = reader.read("Ya_0.000_10.000")
    assert samples.dtype == np.float32 and sr == 16000
    np.testing.assert_allclose(samples, clips["Ya_0.000_10.000"], atol=0.5 / 32767 + 1e-7)
    np.testing.assert_array_equal(reader.read("Yb")[0], [1.0, -1.0, 0.0, 1.0])  # clipped to full scale
    assert reader.length("Yb") == 4 and "Yb" in reader
    clone = pickle.loads(pickle.dumps(reader))  # what a spawn-started DataLoader worker gets
    assert clone._file is None and clone.read("Yb")[1] == 16000
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_read_in_child, args=(reader, "Yb", queue))
    child.start()
    values, sr = queue.get(timeout=30)
    child.join(timeout=30)
    assert values == [1.0, -1.0, 0.0, 1.0] and sr == 16000 and child.exitcode == 0
    with pytest.raises(InputFileError, match="'Yc' is not in this pack"):
        reader.read("Yc")


def test_pack_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="mono"):
        write_pack(tmp_path / "x.h5", [("a", np.zeros((2, 10)))], 16000)
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.tmp").exists()
    with pytest.raises(ValueError, match="duplicate"):
        write_pack(tmp_path / "y.h5", [("a", np.zeros(3)), ("a", np.zeros(3))], 16000)
    with pytest.raises(InputFileError, match="no such audio pack"):
        PackReader(tmp_path / "absent.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputFileError, match="not a readable HDF5 pack"):
        PackReader(tmp_path / "junk.h5").keys()
