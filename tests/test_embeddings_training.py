"""Precomputed-embedding path: HDF5 stores in both layouts, `python -m avtag.train fit`
with configs/multilevel_embeddings.yaml learning from them, weights-only checkpoints,
export with ``frontend: null``, evaluation on a store, and the clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from avtag.data.embeddings import EmbeddingDataset, dequantise, quantise, read_class_labels, write_embedding_store
from avtag.errors import CheckpointError, InputFileError

from conftest import shared_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEGMENTS, DIM = 10, 128
# (mid, display name) of the synthetic store's 6 label columns
STORE_LABELS = [(f"/m/syn{i}", name) for i, name in enumerate(["Siren", "Horn", "Engine", "Bell", "Dog", "Rain"])]
TINY_MODEL_ARGS = {"depth": 2, "hidden_dim": 48, "gru_hidden": 24, "dropout": 0.1}


def synthetic_embeddings(n_clips: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clips of 10 noisy 128-d segments; each label adds its own direction to 2-4 random
    segments (a weak label: the clip says which events, not where)."""
    directions = np.random.default_rng(1234).choice([-0.2, 0.2], size=(len(STORE_LABELS), DIM))
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.12, size=(n_clips, SEGMENTS, DIM))
    y = rng.random((n_clips, len(STORE_LABELS))) < 0.3
    for clip, classes in enumerate(y):
        for c in np.flatnonzero(classes):
            x[clip, rng.choice(SEGMENTS, size=rng.integers(2, 5), replace=False)] += directions[c]
    return np.clip(x, -0.99, 0.99), y


def write_labels_csv(path: Path, labels: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows((i, mid, name) for i, (mid, name) in enumerate(labels))
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("embeddings")
    paths = {"labels": write_labels_csv(root / "class_labels_indices.csv", STORE_LABELS)}
    for split, n, seed in (("train", 300, 0), ("val", 120, 1), ("test", 120, 2)):
        x, y = synthetic_embeddings(n, seed)
        ids = [f"{split}{i:04d}" for i in range(n)]
        paths[f"{split}_uint8"] = write_embedding_store(root / f"{split}_uint8.h5", x, y, ids, quantised=True)
        paths[f"{split}_float"] = write_embedding_store(root / f"{split}_float.h5", x, y, ids, quantised=False)
    return paths


# ----------------------------------------------------------------------------- store


def test_both_layouts_read_alike_and_uint8_is_dequantised_as_documented(stores):
    quantised = EmbeddingDataset(stores["train_uint8"], class_labels=stores["labels"])
    floating = EmbeddingDataset(stores["train_float"], class_labels=stores["labels"])
    with h5py.File(stores["train_uint8"], "r") as fh:
        raw = fh["x"][3]
        assert fh["x"].dtype == np.uint8 and fh["y"].shape == (300, 6) and fh["video_id_list"][0] == b"train0000"
    item = quantised[3]
    assert item["features"].dtype == torch.float32 and item["features"].shape == (SEGMENTS, DIM)
    assert np.array_equal(item["features"].numpy(), (raw.astype(np.float32) - 128) / 128)
    assert torch.allclose(item["features"], floating[3]["features"], atol=0.5 / 128 + 1e-6)  # half a quantisation step
    assert torch.equal(item["target"], floating[3]["target"]) and item["target"].dtype == torch.float32
    assert quantised.classes == [name for _, name in STORE_LABELS] and item["index"] == 3
    assert np.array_equal(dequantise(quantise(np.array([-1.0, 0.0, 0.5]))), np.array([-1.0, 0.0, 0.5], dtype=np.float32))
    assert quantised.store.ids()[:2] == ["train0000", "train0001"]


def test_classes_are_picked_from_the_store_columns_by_name_or_mid(stores):
    full = EmbeddingDataset(stores["val_float"], class_labels=stores["labels"])
    picked = EmbeddingDataset(stores["val_float"], ["Dog", "/m/syn0"], stores["labels"], in_memory=False)
    assert picked.classes == ["Dog", "/m/syn0"]
    assert np.array_equal(picked.targets, full.targets[:, [4, 0]])
    assert torch.equal(picked[5]["features"], full[5]["features"])  # read from the file, same values
    with pytest.raises(InputFileError) as err:
        EmbeddingDataset(stores["val_float"], ["Dog", "Banjo"], stores["labels"])
    assert "\n" not in str(err.value) and "'Banjo'" in str(err.value) and "val_float.h5" in str(err.value)
    with pytest.raises(InputFileError, match="store has 6 label columns but 2 classes"):
        EmbeddingDataset(stores["val_float"], ["Dog", "Siren"])  # unnamed columns must match the class list


def test_bad_stores_are_one_line_errors(stores, tmp_path):
    with pytest.raises(InputFileError, match="no such embedding store"):
        EmbeddingDataset(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="not a readable HDF5"):
        EmbeddingDataset(tmp_path / "text.h5")
    with h5py.File(tmp_path / "nox.h5", "w") as fh:
        fh["y"] = np.zeros((3, 6), dtype=bool)
    with pytest.raises(InputFileError, match="needs datasets 'x' and 'y'"):
        EmbeddingDataset(tmp_path / "nox.h5")
    with h5py.File(tmp_path / "shapes.h5", "w") as fh:
        fh["x"], fh["y"] = np.zeros((3, 10, 128), dtype=np.uint8), np.zeros((4, 6), dtype=bool)
    with pytest.raises(InputFileError, match="same N"):
        EmbeddingDataset(tmp_path / "shapes.h5")
    short = write_labels_csv(tmp_path / "five.csv", STORE_LABELS[:5])
    with pytest.raises(InputFileError, match="name 5 classes but the store has 6"):
        EmbeddingDataset(stores["val_uint8"], class_labels=short)


def test_dcase17_events_come_from_the_527_audioset_columns(tmp_path):
    from avtag.events import dcase17_events

    labels_csv = shared_path("data", "audioset", "class_labels_indices.csv")
    events = dcase17_events()
    rng = np.random.default_rng(0)
    y = rng.random((20, 527)) < 0.1
    store = write_embedding_store(tmp_path / "as.h5", rng.normal(0, 0.1, (20, 10, 128)), y)
    dataset = EmbeddingDataset(store, [e.name for e in events], labels_csv)
    by_mid = {mid: i for i, (mid, _) in enumerate(read_class_labels(labels_csv))}
    assert np.array_equal(dataset.targets, y[:, [by_mid[e.mid] for e in events]])
    assert len(EmbeddingDataset(store, class_labels=labels_csv).classes) == 527


# ----------------------------------------------------------------------------- training + evaluation


def _fit(stores: dict[str, Path], layout: str, run_dir: Path, classes: str) -> Path:
    """`python -m avtag.train fit --config configs/multilevel_embeddings.yaml` (in-process), small model."""
    from avtag.train import main

    main([
        "fit", "--config", str(PROJECT_ROOT / "configs" / "multilevel_embeddings.yaml"),
        "--data.train_store", str(stores[f"train_{layout}"]),
        "--data.val_store", str(stores[f"val_{layout}"]),
        "--data.class_labels", str(stores["labels"]),
        "--data.batch_size", "30", "--data.num_workers", "0",
        "--model.classes", classes,
        "--model.model_args", json.dumps(TINY_MODEL_ARGS),
        "--model.optimizer.init_args.lr", "0.003",
        "--trainer.max_epochs", "6", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(run_dir),
    ])
    best = list((run_dir / "checkpoints").glob("epoch*-f1*.ckpt"))
    assert len(best) == 1 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    return best[0]


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "uint8": _fit(stores, "uint8", root / "uint8", str(stores["labels"])),  # all 6 classes named by the CSV
        "float": _fit(stores, "float", root / "float", json.dumps(["Horn", "Engine", "Rain", "Siren"])),
    }


@pytest.mark.parametrize("layout", ["uint8", "float"])
def test_cli_trains_multilevel_embeddings_from_a_store(trained, layout):
    checkpoint = torch.load(trained[layout], weights_only=True)  # the whole checkpoint
    package = checkpoint["avtag"]
    assert package["model_name"] == "multilevel_embeddings" and package["frontend"] is None
    assert package["frontend_state"] == {}
    assert checkpoint["hyper_parameters"]["frontend"] is None
    expected = [n for _, n in STORE_LABELS] if layout == "uint8" else ["Horn", "Engine", "Rain", "Siren"]
    assert package["classes"] == expected and package["model_args"]["num_classes"] == len(expected)
    assert package["thresholds"] != [0.5] * len(expected)  # tuned on validation
    validation = package["metadata"]["validation"]
    assert validation["val_map"] > 0.9 and validation["clips"] == 120
    assert package["metadata"]["input"] == "features"


def test_evaluation_and_export_of_a_feature_model(trained, stores, tmp_path, capsys):
    from avtag.cli import main as avtag_main
    from avtag.evaluate import load_feature_model, main as evaluate_main

    out = tmp_path / "eval"
    args = ["--embeddings", str(stores["test_uint8"]), "--class-labels", str(stores["labels"])]
    assert evaluate_main(["--checkpoint", str(trained["uint8"]), *args, "--out", str(out)]) == 0
    assert "mAP" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"predictions.csv", "probabilities.csv", "thresholds.json", "metrics.json", "per_class.md"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clips"] == 120 and metrics["mAP"] > 0.9 and metrics["micro"]["f1"] > 0.7
    loaded = load_feature_model(trained["uint8"])
    saved = json.loads((out / "thresholds.json").read_text())
    assert saved["thresholds"] == loaded.thresholds and "saved with the model" in saved["source"]

    # probabilities.csv is the model's output on the store, in store order
    dataset = EmbeddingDataset(stores["test_uint8"], loaded.classes, stores["labels"])
    with torch.no_grad():
        direct = loaded.model.eval()(torch.stack([dataset[i]["features"] for i in range(4)])).clip_probs.numpy()
    with (out / "probabilities.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", *loaded.classes] and rows[1][0] == "test0000"
    assert np.allclose(np.array([[float(v) for v in r[1:]] for r in rows[1:5]]), direct, atol=1e-5)

    # export keeps frontend null and evaluates identically
    export = tmp_path / "export"
    assert avtag_main(["export", str(trained["uint8"]), str(export)]) == 0
    assert "takes precomputed features" in capsys.readouterr().out
    config = json.loads((export / "config.json").read_text())
    assert config["frontend"] is None and config["thresholds"] == loaded.thresholds
    assert evaluate_main(["--checkpoint", str(export), *args, "--out", str(tmp_path / "eval2")]) == 0
    assert (tmp_path / "eval2" / "probabilities.csv").read_text() == (out / "probabilities.csv").read_text()

    # thresholds tuned on a disjoint validation store; never on the evaluated one
    assert evaluate_main(["--checkpoint", str(export), *args, "--thresholds-from", str(stores["val_uint8"]), "--out", str(tmp_path / "eval3")]) == 0
    assert "tuned on" in json.loads((tmp_path / "eval3" / "thresholds.json").read_text())["source"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--checkpoint", str(export), *args, "--thresholds-from", str(stores["test_float"]), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "also evaluated" in capsys.readouterr().err


def test_audio_tagger_refuses_a_feature_model_in_one_line(trained, tmp_path, capsys):
    from avtag.audio.tagger import AudioTagger
    from avtag.cli import main as avtag_main
    from avtag.evaluate import main as evaluate_main

    export = tmp_path / "export"
    avtag_main(["export", str(trained["float"]), str(export)])
    for source in (trained["float"], export):
        with pytest.raises(CheckpointError) as err:
            AudioTagger.from_pretrained(source)
        message = str(err.value)
        assert "\n" not in message and "takes precomputed embeddings, not waveforms" in message and str(source) in message
    (tmp_path / "m.jsonl").write_text("")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--checkpoint", str(trained["float"]), "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err_lines) == 1 and "precomputed embeddings" in err_lines[0]


def test_waveform_data_for_a_feature_model_and_vice_versa_are_refused(stores, tmp_path, capsys):
    import lightning as L

    from avtag.data.datasets import ClipDataModule
    from avtag.data.embeddings import EmbeddingDataModule
    from avtag.errors import AvtagError
    from avtag.evaluate import main as evaluate_main
    from avtag.train import TaggingModule

    from test_train import tiny_module

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    feature_module = TaggingModule("multilevel_embeddings", TINY_MODEL_ARGS, frontend=None, classes=["Dog"])
    with pytest.raises(AvtagError, match="takes precomputed features .*ClipDataModule yields 'waveform'"):
        trainer.fit(feature_module, ClipDataModule("a.jsonl", "b.jsonl", num_workers=0))
    with pytest.raises(AvtagError, match="takes waveforms .*EmbeddingDataModule yields 'features'"):
        trainer.fit(tiny_module(), EmbeddingDataModule(str(stores["train_float"]), str(stores["val_float"]), num_workers=0))
    with pytest.raises(AvtagError, match="need a front-end"):
        TaggingModule("multilevel_embeddings", frontend=None, frontend_args={"sample_rate": 8000})

    waveform_checkpoint = tmp_path / "wave.ckpt"
    content: dict = {}
    tiny_module().on_save_checkpoint(content)
    torch.save(content, waveform_checkpoint)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--checkpoint", str(waveform_checkpoint), "--embeddings", str(stores["test_float"]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0 and "takes waveforms" in err and "--manifest" in err
