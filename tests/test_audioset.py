"""``avtag prepare audioset``: both list layouts (the real files), MID mapping, the names
people give downloads, per-split/per-class missing report, packs + shards + manifests
validated, one-line errors; and the AudioSet configs' values against the papers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from avtag.data.manifests import read_manifest, write_manifest
from avtag.data.pack import PackReader
from avtag.errors import InputFileError, ManifestError
from avtag.recipes.audioset import (
    clip_name_key,
    find_clips,
    prepare,
    read_segments,
    validate_prepared,
)
from conftest import shared_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLASSES_CSV = 'index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/04rlf,Music\n2,/m/0jbk,"Animal, wild"\n'
MIDS = {"/m/09x0r": 0, "/m/04rlf": 1, "/m/0jbk": 2}


def test_real_official_and_resaved_lists_parse_to_their_counts():
    folder = shared_path("data", "audioset")
    from avtag.data.embeddings import read_class_labels

    labels = read_class_labels(folder / "class_labels_indices.csv")
    assert len(labels) == 527
    mids = {mid: i for i, (mid, _) in enumerate(labels)}
    balanced = read_segments(folder / "balanced_train_segments.csv", mids)  # official: 3 '#' lines, quoted lists
    evaluation = read_segments(folder / "eval_segments.csv", mids)  # re-saved: no spaces, unquoted single MIDs
    assert len(balanced) == 22160 and balanced.num_labels == 52882  # the header's own counts
    assert len(evaluation) == 20371
    assert balanced.keys[0] == "Y--PJHxphWEs_30.000_40.000" and balanced.columns[0] == (0, mids["/t/dd00088"])
    assert evaluation.keys[1] == "Y--BfvyPmVMo_20.000_30.000" and evaluation.columns[1] == (mids["/m/03l9g"],)
    assert not balanced.unknown and not evaluation.unknown
    assert {len(c) for c in balanced.columns} >= {1, 2, 3} and all(balanced.columns)
    assert not set(balanced.keys) & set(evaluation.keys)


def test_unknown_mids_are_reported_and_bad_lines_are_one_line_errors(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text('# YTID, start_seconds, end_seconds, positive_labels\nAAAAAAAAAAA, 0.000, 10.000, "/m/09x0r,/m/zzz"\n')
    segments = read_segments(path, MIDS)
    assert segments.columns == [(0,)] and segments.unknown == [("YAAAAAAAAAAA_0.000_10.000", "/m/zzz")]
    for bad, message in [
        ("AAAAAAAAAAA,0,10\n", "expected YTID, start, end, labels"),
        ("AAAAAAAAAAA,x,10,/m/09x0r\n", "bad start/end"),
        ("AAAAAAAAAA,0,10,/m/09x0r\n", "11-character id"),
        ('AAAAAAAAAAA,0,10,"/m/09x0r\n', "unterminated"),
        ("AAAAAAAAAAA,0,10,/m/09x0r\nAAAAAAAAAAA,0.0,10.0,/m/04rlf\n", "listed twice"),
        ("# num_ytids=2, num_segs=2, num_unique_labels=1, num_positive_labels=2\nAAAAAAAAAAA,0,10,/m/09x0r\n", "header states 2"),
    ]:
        path.write_text(bad)
        with pytest.raises(InputFileError, match=message):
            read_segments(path, MIDS)


@pytest.mark.parametrize(
    "name",
    ["-5QrBL6MzLg_60.000_70.000.wav", "Y-5QrBL6MzLg_60.000_70.000.flac", "-5QrBL6MzLg_060.000_070.000.m4a",
     "Y-5QrBL6MzLg_60_70.wav", "sub/dir/-5QrBL6MzLg_60.0_70.0.ogg"],
)
def test_download_names_map_to_one_clip_id(name):
    assert clip_name_key(name) == "Y-5QrBL6MzLg_60.000_70.000"


@pytest.mark.parametrize("name", ["-5QrBL6MzLg.wav", "short_60_70.wav", "-5QrBL6MzLg_70_60.wav", "-5QrBL6MzLg_60.0001_70.wav"])
def test_other_names_are_not_clips(name):
    assert clip_name_key(name) is None


def _corpus(tmp_path):
    """Two lists in the two layouts, a class list with an unknown MID, and downloads named
    in the ways people name them (one missing, one corrupt)."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classes.csv").write_text(CLASSES_CSV)
    (lists / "train.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=4, num_segs=4, num_unique_labels=3, num_positive_labels=6\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        'AAAAAAAAAAA, 30.000, 40.000, "/m/09x0r,/m/04rlf"\n'
        'BBBBBBBBBBB, 0.000, 10.000, "/m/0jbk"\n'
        'CCCCCCCCCCC, 10.000, 20.000, "/m/04rlf,/m/unknown"\n'
        'DDDDDDDDDDD, 5.000, 15.000, "/m/09x0r"\n'
    )
    (lists / "eval.csv").write_text("EEEEEEEEEEE,0,10,/m/0jbk\nFFFFFFFFFFF,20,30,/m/09x0r\n")
    audio = tmp_path / "audio"
    (audio / "nested").mkdir(parents=True)
    rate = 16000
    rng = np.random.default_rng(0)
    sf.write(audio / "AAAAAAAAAAA_30.000_40.000.wav", rng.uniform(-0.5, 0.5, 10 * rate), rate)
    sf.write(audio / "nested" / "YBBBBBBBBBBB_000.000_010.000.flac", rng.uniform(-0.5, 0.5, 12 * rate), rate)  # long
    sf.write(audio / "CCCCCCCCCCC_10_20.wav", rng.uniform(-0.5, 0.5, (9 * rate, 2)), rate)  # short, stereo
    (audio / "EEEEEEEEEEE_0_10.wav").write_bytes(b"RIFF not really")  # corrupt download
    sf.write(audio / "FFFFFFFFFFF_20.000_30.000.wav", rng.uniform(-0.5, 0.5, 10 * rate), rate)
    sf.write(audio / "FFFFFFFFFFF_20_30.flac", rng.uniform(-0.5, 0.5, 10 * rate), rate)  # duplicate of the same clip
    (audio / "notes.txt").write_text("not audio")
    return {"train": lists / "train.csv", "eval": lists / "eval.csv"}, lists / "classes.csv", audio


def test_a_corrupt_download_does_not_hide_a_good_one_of_the_same_clip(tmp_path):
    """The recipe tries a clip's files in order (.wav first): a broken .wav falls back to the .flac."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classes.csv").write_text(CLASSES_CSV)
    (lists / "eval.csv").write_text("EEEEEEEEEEE,0,10,/m/0jbk\n")
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "EEEEEEEEEEE_0_10.wav").write_bytes(b"RIFF not really")
    sf.write(audio / "EEEEEEEEEEE_0.000_10.000.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 10 * 8000), 8000)
    found, duplicates = find_clips(audio)
    assert [p.suffix for p in found["YEEEEEEEEEEE_0.000_10.000"]] == [".wav", ".flac"] and duplicates == 1
    results, _ = prepare({"eval": lists / "eval.csv"}, lists / "classes.csv", tmp_path / "out", audio,
                         sample_rate=8000, workers=1, shards=False)
    assert results["eval"].packed == [0] and results["eval"].failed == []


def test_prepare_pairs_reports_packs_shards_and_validates(tmp_path):
    lists, classes, audio = _corpus(tmp_path)
    found, duplicates = find_clips(audio)
    assert len(found) == 5 and duplicates == 1
    out = tmp_path / "out"
    results, report = prepare(lists, classes, out, audio, sample_rate=8000, workers=1, shards=True)
    assert [results["train"].segments.keys[r] for r in results["train"].missing] == ["YDDDDDDDDDDD_5.000_15.000"]
    assert len(results["eval"].failed) == 1 and "EEEEEEEEEEE" in results["eval"].failed[0][1]
    train = read_manifest(out / "train.jsonl")
    assert [r.id for r in train] == ["YAAAAAAAAAAA_30.000_40.000", "YBBBBBBBBBBB_0.000_10.000", "YCCCCCCCCCCC_10.000_20.000"]
    assert train[0].labels == ["Speech", "Music"] and train[1].labels == ["Animal, wild"]
    assert train[2].labels == ["Music"]  # the unknown MID is in unknown_mids.csv, not silently lost:
    assert "train,YCCCCCCCCCCC_10.000_20.000,/m/unknown" in (out / "unknown_mids.csv").read_text()
    with PackReader(out / "train.h5") as pack:
        assert pack.sample_rate == 8000
        assert [pack.length(r.id) for r in train] == [80000, 80000, 72000]  # 12 s cropped to its 10-s segment
    assert "train,YDDDDDDDDDDD_5.000_15.000,/m/09x0r" in (out / "missing.csv").read_text()
    assert "EEEEEEEEEEE" in (out / "failures.csv").read_text()
    text = (out / "report.txt").read_text()
    assert "1 unknown MIDs" in text and "validated: train 3 clips, eval 1 clips" in text
    speech = next(line for line in text.splitlines() if line.startswith("Speech"))
    assert speech.split()[1:] == ["1/2", "0/1"]  # missing/total per split for the class
    from avtag.data.streaming import ShardDataset

    shards = ShardDataset(out / "train.shards", ["Speech", "Music", "Animal, wild"], 8000, 80000, train)
    assert shards[1]["target"].tolist() == [0.0, 0.0, 1.0] and len(shards) == 3


def test_validation_catches_a_manifest_that_disagrees_with_its_pack(tmp_path):
    lists, classes, audio = _corpus(tmp_path)
    out = tmp_path / "out"
    prepare(lists, classes, out, audio, sample_rate=8000, shards=False)
    records = read_manifest(out / "train.jsonl")
    records[1].pack_key = "Ynot-there-0_0.000_10.000"
    write_manifest(records, out / "train.jsonl")
    with pytest.raises(ManifestError, match="is not in train.h5"):
        validate_prepared(out, ["train"], ["Speech", "Music", "Animal, wild"], 8000)
    records[1].pack_key, records[1].labels = None, ["Speech", "Bird"]
    write_manifest(records, out / "train.jsonl")
    with pytest.raises(ManifestError, match="not AudioSet classes"):
        validate_prepared(out, ["train"], ["Speech", "Music", "Animal, wild"], 8000)


def test_cli_lists_only_and_one_line_errors(tmp_path, capsys):
    from avtag.cli import main

    lists, classes, _ = _corpus(tmp_path)
    command = ["prepare", "audioset", "--class-labels", str(classes), "--out", str(tmp_path / "o")]
    assert main(command + ["--segments", f"train={lists['train']}"]) == 0
    assert "train: 4 segments, 6 labels, 1 unknown MIDs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(command + ["--segments", f"train={tmp_path / 'nope.csv'}"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error:") and "nope.csv" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- the AudioSet configs

CONFIGS = PROJECT_ROOT / "configs" / "audioset"


def _config(name):
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("name", ["multilevel_embeddings.yaml", "sca.yaml", "glat_cnn10.yaml", "glat_resnet38.yaml"])
def test_audioset_configs_rank_by_map_over_527_classes_with_balanced_batches(name):
    config = _config(name)
    model, data = config["model"], config["data"]
    data = data.get("init_args", data)
    assert config["checkpoint"] == {"monitor": "val_map", "mode": "max", "save_top_k": 1}
    assert model["decision_thresholds"] == "none"  # ranking metrics only: no tuned thresholds on AudioSet
    assert model["classes"].endswith("class_labels_indices.csv")
    assert data["balanced"] is True
    assert model["optimizer"]["class_path"] == "torch.optim.Adam" and model["optimizer"]["init_args"]["lr"] == 0.001


def test_audioset_config_values_are_the_papers():
    ml = _config("multilevel_embeddings.yaml")
    assert {k: ml["model"]["model_args"][k] for k in ("embedding_dim", "depth", "hidden_dim", "gru_hidden", "dropout")} == {
        "embedding_dim": 128, "depth": 5, "hidden_dim": 1024, "gru_hidden": 256, "dropout": 0.5}  # 000 §3.4
    assert ml["data"]["init_args"]["batch_size"] == 500  # 000 §3.4
    sca = _config("sca.yaml")
    assert sca["model"]["model_args"]["attention_blocks"] == 3 and sca["model"]["model_args"]["input_frames"] == 400
    front = sca["model"]["frontend_args"]
    assert front["n_mels"] == 64 and front["clip_seconds"] * front["sample_rate"] / front["hop_length"] == 400  # 001 §4.1
    for name in ("glat_cnn10.yaml", "glat_resnet38.yaml"):
        glat = _config(name)
        args = glat["model"]["model_args"]
        assert (args["num_local_clips"], args["local_seconds"]) == (5, 3.0)  # 003 §3.1
        assert glat["data"]["batch_size"] == 32 and glat["trainer"]["max_steps"] == 800_000  # 003 §3.1
        assert glat["model"]["frontend"] == "cnn" and glat["data"]["train_manifest"].endswith("full_train.jsonl")


def _needs_merge(model_name: str | None = None) -> None:
    import inspect

    from avtag.audio.models.base import available_models
    from avtag.train import TaggingModule

    if "decision_thresholds" not in inspect.signature(TaggingModule).parameters:
        pytest.skip("needs TaggingModule(decision_thresholds=...) from the training branch")
    if model_name and model_name not in available_models():
        pytest.skip(f"needs the {model_name!r} backbone from the models branch")


@pytest.mark.parametrize("name,backbone", [("sca.yaml", None), ("glat_cnn10.yaml", None), ("glat_resnet38.yaml", "resnet38")])
def test_audioset_configs_build_their_models(name, backbone, tmp_path):
    _needs_merge(backbone)
    from avtag.train import TaggingModule

    classes = shared_path("data", "audioset", "class_labels_indices.csv")
    model = _config(name)["model"]
    kwargs = {k: v for k, v in model.items() if k not in ("optimizer", "scheduler")}
    module = TaggingModule(**kwargs | {"classes": str(classes)})
    assert len(module.classes) == 527
