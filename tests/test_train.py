"""Training plumbing: datasets, the balanced sampler, TaggingModule checkpoints, the
LightningCLI config of 004, DDP and resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from avtag.data.datasets import ClassBalancedSampler, ClipDataModule, ClipDataset
from avtag.data.manifests import ClipRecord, EventSpan, write_manifest
from avtag.data.pack import write_pack
from avtag.data.synthetic import make_tone_task
from avtag.errors import ManifestError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
SECONDS = 2.0
TONE_CLASSES = ["tone0", "tone1", "tone2", "tone3"]
# A CRNN small enough for CPU tests: same structure as 004's, fewer channels/units.
TINY_MODEL_ARGS = {"conv_channels": [8, 8, 16, 16], "rnn_hidden": 16}
TINY_FRONTEND_ARGS = {"sample_rate": RATE, "clip_seconds": SECONDS}


def write_tone_split(root: Path, split: str, n_clips: int, seed: int, events: bool = False) -> Path:
    """Tone-burst clips (avtag.data.synthetic) as WAV files + a manifest; returns the manifest."""
    waves, targets = make_tone_task(n_clips, len(TONE_CLASSES), SECONDS, RATE, seed=seed, snr_db=6.0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (wave, target) in enumerate(zip(waves, targets, strict=True)):
        name = f"{split}{i:03d}.wav"
        sf.write(root / "audio" / name, wave, RATE)
        labels = [TONE_CLASSES[c] for c in np.flatnonzero(target)]
        spans = [EventSpan(label, 0.0, SECONDS) for label in labels] if events else []
        records.append(ClipRecord(id=f"{split}{i:03d}", labels=labels, audio=f"audio/{name}", duration=SECONDS, events=spans))
    return write_manifest(records, root / f"{split}.jsonl")


def tiny_module(**overrides):
    from avtag.train import TaggingModule

    kwargs = dict(
        model_args=TINY_MODEL_ARGS,
        frontend_args=TINY_FRONTEND_ARGS,
        classes=TONE_CLASSES,
        optimizer=_adam,
    )
    return TaggingModule(**(kwargs | overrides))


def _adam(params):
    return torch.optim.Adam(params, lr=3e-3)


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    write_tone_split(root, "train", 48, seed=0)
    write_tone_split(root, "val", 24, seed=1)
    return root


# ----------------------------------------------------------------------------- datasets


def test_clip_dataset_reads_resamples_and_fits_length(tmp_path):
    t = np.arange(int(1.5 * 16000)) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 16000)  # 1.5 s stereo at 16 kHz
    sf.write(tmp_path / "b.flac", np.full(3 * 8000, 0.25), 8000)  # 3 s mono at 8 kHz
    records = [
        ClipRecord(id="a", labels=["tone1", "tone3"], audio="a.wav"),
        ClipRecord(id="b", labels=[], audio="b.flac"),
    ]
    dataset = ClipDataset(write_manifest(records, tmp_path / "m.jsonl"), RATE, SECONDS, TONE_CLASSES)
    a, b = dataset[0], dataset[1]
    assert a["waveform"].shape == b["waveform"].shape == (int(SECONDS * RATE),)
    assert a["waveform"].dtype == torch.float32
    assert torch.equal(a["target"], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.equal(b["target"], torch.zeros(4))
    assert torch.all(a["waveform"][int(1.5 * RATE):] == 0)  # zero-padded at the end
    assert a["waveform"][: int(1.4 * RATE)].abs().max() > 0.4  # resampled tone survives
    assert torch.allclose(b["waveform"], torch.full((int(SECONDS * RATE),), 0.25))  # cropped


def test_clip_dataset_reads_packs_like_files(tmp_path):
    waves, _ = make_tone_task(3, 4, SECONDS, RATE, seed=3)
    for i, wave in enumerate(waves):
        sf.write(tmp_path / f"{i}.wav", wave, RATE, subtype="PCM_16")
    write_pack(tmp_path / "p.h5", ((f"clip{i}", wave) for i, wave in enumerate(waves)), RATE)
    from_files = ClipDataset([ClipRecord(id=f"clip{i}", audio=f"{i}.wav") for i in range(3)], RATE, SECONDS, base_dir=tmp_path)
    from_pack = ClipDataset([ClipRecord(id=f"clip{i}", pack="p.h5") for i in range(3)], RATE, SECONDS, base_dir=tmp_path)
    for i in range(3):
        assert torch.allclose(from_files[i]["waveform"], from_pack[i]["waveform"], atol=1e-4)


def test_unknown_labels_are_one_line_manifest_errors(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    path = write_manifest([ClipRecord(id="x", labels=["tone1", "Banjo"], audio="x.wav")], tmp_path / "m.jsonl")
    with pytest.raises(ManifestError) as err:
        ClipDataset(path, RATE, SECONDS, TONE_CLASSES)
    message = str(err.value)
    assert "\n" not in message and "'Banjo'" in message and "m.jsonl" in message


def test_absent_files_are_reported_up_front(tmp_path):
    sf.write(tmp_path / "here.wav", np.zeros(800), RATE)
    records = [ClipRecord(id="here", audio="here.wav")]
    records += [ClipRecord(id=f"gone{i}", audio=f"gone{i}.wav") for i in range(5)]
    records += [ClipRecord(id="packed", pack="nopack.h5")]
    with pytest.raises(ManifestError) as err:
        ClipDataset(write_manifest(records, tmp_path / "m.jsonl"), RATE, SECONDS, TONE_CLASSES)
    message = str(err.value)
    assert "\n" not in message
    assert "6 of 7 files" in message and "gone0.wav" in message and "gone4.wav" not in message


def test_missing_pack_keys_and_sourceless_records(tmp_path):
    write_pack(tmp_path / "p.h5", [("k0", np.zeros(100))], RATE)
    with pytest.raises(ManifestError, match="1 clip\\(s\\) are not in their pack.*p.h5:k1"):
        ClipDataset([ClipRecord(id="k0", pack="p.h5"), ClipRecord(id="k1", pack="p.h5")], RATE, base_dir=tmp_path)
    with pytest.raises(ManifestError, match="neither an audio file nor a pack"):
        ClipDataset([ClipRecord(id="k0")], RATE, base_dir=tmp_path)


# ----------------------------------------------------------------------------- sampler


def test_balanced_sampler_gives_every_class_equal_share_of_each_batch():
    rng = np.random.default_rng(0)
    # very unbalanced single-label data: class 0 has 500 clips, class 3 has 5
    sizes = [500, 100, 20, 5]
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    rng.shuffle(labels)
    targets = np.eye(4, dtype=np.float32)[labels]
    sampler = ClassBalancedSampler(targets, batch_size=10, num_batches=30, seed=1)
    indices = np.fromiter(iter(sampler), dtype=int)
    assert len(indices) == len(sampler) == 300
    for batch in indices.reshape(30, 10):
        counts = np.bincount(labels[batch], minlength=4)
        assert counts.max() - counts.min() <= 1, counts  # round-robin: 2 or 3 per class
    rare = np.flatnonzero(labels == 3)
    assert set(indices[labels[indices] == 3]) == set(rare)  # every rare clip is used
    # deterministic in (seed, epoch), different across epochs and ranks
    assert np.array_equal(indices, np.fromiter(iter(sampler), dtype=int))
    sampler.set_epoch(1)
    assert not np.array_equal(indices, np.fromiter(iter(sampler), dtype=int))
    other_rank = ClassBalancedSampler(targets, batch_size=10, num_batches=30, seed=1, num_replicas=2, rank=1)
    assert not np.array_equal(indices, np.fromiter(iter(other_rank), dtype=int))


def test_balanced_sampler_default_epoch_length_and_background_group():
    targets = np.zeros((50, 3), dtype=np.float32)
    targets[:10, 0] = 1
    targets[10:20, [1, 2]] = 1  # multi-label clips belong to both classes
    sampler = ClassBalancedSampler(targets, batch_size=8, num_replicas=2, rank=0)
    assert sampler.num_batches == 4 and len(sampler) == 32  # ceil(50 / (8 * 2))
    indices = np.fromiter(iter(sampler), dtype=int)
    assert (indices >= 20).sum() == 8  # the unlabelled clips are one group of four
    assert ((indices >= 10) & (indices < 20)).sum() == 16  # classes 1 and 2 share clips


# ----------------------------------------------------------------------------- module


def test_module_checkpoint_loads_with_weights_only_and_resumes(tone_data, tmp_path):
    import lightning as L

    from avtag.audio.tagger import AudioTagger

    module = tiny_module()
    assert module.model.model_args["num_classes"] == 4 and module.model.model_args["n_mels"] == 60
    data = ClipDataModule(str(tone_data / "train.jsonl"), str(tone_data / "val.jsonl"), batch_size=12, num_workers=0, epoch_batches=2)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    assert set(trainer.callback_metrics) >= {"val_micro_f1", "val_map", "val_mauc", "val_dprime", "val_loss", "train_loss"}
    path = Path(trainer.checkpoint_callback.best_model_path)
    checkpoint = torch.load(path, weights_only=True)  # the whole checkpoint, not only our entry
    package = checkpoint["avtag"]
    assert set(package) == {"model_name", "model_args", "state_dict", "frontend", "frontend_state", "classes", "thresholds", "metadata"}
    assert not any(k.startswith(("model.", "module.")) for k in package["state_dict"])
    assert package["thresholds"] == module.thresholds and package["thresholds"] != [0.5] * 4
    assert package["metadata"]["validation"]["val_micro_f1"] == pytest.approx(float(trainer.callback_metrics["val_micro_f1"]))

    tagger = AudioTagger.from_pretrained(path)
    assert tagger.classes == TONE_CLASSES and tagger.thresholds == module.thresholds
    waveform = torch.randn(2, int(SECONDS * RATE)) * 0.1
    module.eval()
    with torch.no_grad():
        assert torch.equal(tagger.eval()(waveform).clip_probs, module(waveform).clip_probs)

    resumed = tiny_module()
    trainer2 = L.Trainer(
        max_epochs=2, accelerator="cpu", default_root_dir=tmp_path / "resume", logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer2.fit(resumed, data, ckpt_path=path)
    assert trainer2.current_epoch == 2 and trainer2.global_step == 4  # continued from step 2


def test_paper_recipe_is_the_config_default():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from avtag.train import TaggingModule, TrainCLI

    cli = TrainCLI(
        TaggingModule,
        ClipDataModule,
        args=["--config", str(PROJECT_ROOT / "configs" / "crnn_maxpool.yaml"), "--trainer.logger", "false"],
        run=False,
    )
    module, trainer = cli.model, cli.trainer
    optimizer = module.configure_optimizers()
    sgd, plateau = optimizer["optimizer"], optimizer["lr_scheduler"]["scheduler"]
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.1, 0.8, True)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (plateau.factor, plateau.patience, plateau.mode) == (0.8, 2, "min")  # = 3 bad epochs, see train.py
    assert optimizer["lr_scheduler"]["monitor"] == "val_loss"
    assert (trainer.gradient_clip_val, trainer.gradient_clip_algorithm) == (1e-3, "value")  # written in the config
    assert cli.datamodule.batch_size == 95 and cli.datamodule.balanced
    assert module.model.model_name == "crnn" and module.model.model_args["pooling"] == "max"
    assert module.frontend.config["sample_rate"] == 20000 and module.frontend.n_mels == 60
    best = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor == "val_micro_f1"]
    assert best and best[0].mode == "max"


def test_cli_reports_a_bad_manifest_in_one_line(tone_data, tmp_path, capsys):
    from avtag.train import main

    config = _tiny_config(tone_data, tmp_path, devices=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--data.train_manifest", str(tmp_path / "absent.jsonl")])
    assert exit_info.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "absent.jsonl" in err_lines[0] and "no such manifest" in err_lines[0]


def test_cli_reports_an_unknown_model_in_one_line(tone_data, tmp_path, capsys):
    from avtag.train import main

    config = _tiny_config(tone_data, tmp_path, devices=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--model.model_name", "no_such_model"])
    assert exit_info.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "unknown model 'no_such_model'" in err_lines[0]


def _tiny_config(data: Path, run_dir: Path, devices: int) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "model_name": "crnn",
            "model_args": TINY_MODEL_ARGS,
            "frontend_args": TINY_FRONTEND_ARGS,
            "classes": TONE_CLASSES,
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.003}},
        },
        "data": {
            "train_manifest": str(data / "train.jsonl"),
            "val_manifest": str(data / "val.jsonl"),
            "batch_size": 12,
            "num_workers": 0,
            "epoch_batches": 2,
        },
        "trainer": {
            "default_root_dir": str(run_dir),
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": devices,
            "strategy": "ddp" if devices > 1 else "auto",
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "logger": False,
        },
    }
    path = run_dir / "tiny.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_ddp_two_cpu_processes_train_and_save_a_loadable_checkpoint(tone_data, tmp_path):
    """`python -m avtag.train fit` with strategy ddp on 2 CPU processes (gloo)."""
    from avtag.audio.tagger import AudioTagger

    config = _tiny_config(tone_data, tmp_path / "run", devices=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, "-m", "avtag.train", "fit", "--config", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    best = [p for p in checkpoints.glob("epoch000-f1*.ckpt")]
    assert len(best) == 1 and (checkpoints / "last.ckpt").is_file()
    checkpoint = torch.load(best[0], weights_only=True)
    assert checkpoint["hyper_parameters"]["optimizer"]["class_path"] == "torch.optim.Adam"
    assert checkpoint["avtag"]["metadata"]["validation"]["clips"] == 24  # gathered from both ranks, de-duplicated
    assert checkpoint["global_step"] == 2  # epoch_batches per process
    tagger = AudioTagger.from_pretrained(best[0])
    assert tagger.classes == TONE_CLASSES
    assert tagger.predict(np.zeros(RATE), RATE).clip_probs.shape == (1, 4)


# ----------------------------------------------------------------------------- the train CLI


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from avtag.train import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def fitted(tone_data, tmp_path_factory) -> dict:
    """One CLI fit of the tiny config (2 epochs of 2 steps), shared by the CLI tests."""
    import contextlib
    import io

    from avtag.train import main

    run_dir = tmp_path_factory.mktemp("fit")
    config = _tiny_config(tone_data, run_dir, devices=1)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    return {"config": config, "run_dir": run_dir, "out": out.getvalue() + err.getvalue()}


def test_fit_prints_the_real_best_checkpoint_and_what_stopped_it(fitted):
    printed = fitted["out"]
    best = [line for line in printed.splitlines() if line.startswith("best checkpoint (val_micro_f1")]
    assert len(best) == 1, printed[-2000:]
    path = Path(best[0].split(": ", 1)[1])
    assert path.is_absolute() and path.is_file() and path.parent == fitted["run_dir"] / "checkpoints"
    assert "stopped: max_epochs (2) reached after 4 steps" in printed
    assert f"last checkpoint: {fitted['run_dir'] / 'checkpoints' / 'last.ckpt'}" in printed


def test_max_steps_is_named_as_the_stop_reason(tone_data, tmp_path, capsys):
    config = _tiny_config(tone_data, tmp_path, devices=1)
    code, out, err = _run_cli(capsys, "fit", "--config", str(config), "--trainer.max_steps", "1")
    assert code == 0 and "stopped: max_steps (1) reached after 1 steps" in out + err


def test_train_test_scores_the_test_manifest_with_the_trained_thresholds(fitted, tone_data, capsys):
    best = next((fitted["run_dir"] / "checkpoints").glob("epoch*.ckpt"))
    code, out, err = _run_cli(capsys, "test", "--config", str(fitted["config"]), "--ckpt_path", str(best),
                              "--data.test_manifest", str(tone_data / "val.jsonl"))
    assert code == 0, err[-2000:]
    assert "label prior micro-F1" in out and "| class |" in out
    metrics = json.loads((fitted["run_dir"] / "test" / "metrics.json").read_text())
    saved = torch.load(best, weights_only=True)["avtag"]["thresholds"]
    assert [metrics["per_class"][c]["threshold"] for c in TONE_CLASSES] == pytest.approx(saved)
    assert metrics["clips"] == 24 and "label_prior" in metrics["baselines"]


def test_predict_is_not_offered(capsys):
    code, out, err = _run_cli(capsys, "--help")
    assert code == 0 and "predict" not in out.split("subcommands:")[-1].split("\n\n")[0]
    code, _, err = _run_cli(capsys, "predict")
    assert code == 2 and "Traceback" not in err


def test_resume_continues_from_a_cli_checkpoint(fitted, capsys):
    last = fitted["run_dir"] / "checkpoints" / "last.ckpt"
    code, out, err = _run_cli(capsys, "fit", "--config", str(fitted["config"]), "--trainer.max_epochs", "3",
                              "--ckpt_path", str(last), "--trainer.default_root_dir", str(fitted["run_dir"] / "resumed"))
    assert code == 0, err[-2000:]
    assert "after 6 steps" in out + err  # continued at step 4


def _crafted(source: Path, target: Path, edit) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


@pytest.mark.parametrize("where", ["metadata", "avtag_metadata", "optimizer_args", "datamodule"])
def test_resume_never_instantiates_checkpoint_data(fitted, tmp_path, capsys, where):
    marker = tmp_path / "PWNED"
    popen = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}}

    def edit(checkpoint):
        if where == "metadata":
            checkpoint["hyper_parameters"]["metadata"] = {"note": popen}
        elif where == "avtag_metadata":
            checkpoint["avtag"]["metadata"]["note"] = popen
        elif where == "optimizer_args":
            checkpoint["hyper_parameters"]["optimizer"] = {"class_path": "torch.optim.Adam", "init_args": {"lr": popen}}
        else:
            checkpoint["datamodule_hyper_parameters"] = {"seed": popen}

    evil = _crafted(fitted["run_dir"] / "checkpoints" / "last.ckpt", tmp_path / "evil.ckpt", edit)
    code, out, err = _run_cli(capsys, "fit", "--config", str(fitted["config"]), "--ckpt_path", str(evil),
                              "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(tmp_path / "run"))
    import time

    time.sleep(0.2)  # a spawned process would have touched the marker by now
    assert not marker.exists()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "evil.ckpt" in errors[0] and "refusing to resume" in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("problem", ["url", "missing", "garbage", "empty", "no_avtag_entry", "directory"])
def test_bad_ckpt_path_is_one_line(fitted, tmp_path, capsys, problem):
    path = tmp_path / "x.ckpt"
    if problem == "url":
        path = "http://127.0.0.1:9/x.ckpt"
    elif problem == "garbage":
        path.write_bytes(b"\x80\x04garbage" * 50)
    elif problem == "empty":
        path.write_bytes(b"")
    elif problem == "no_avtag_entry":
        torch.save({"state_dict": {}}, path)
    elif problem == "directory":
        path.mkdir()
    code, out, err = _run_cli(capsys, "fit", "--config", str(fitted["config"]), "--ckpt_path", str(path))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and str(path) in errors[0] and "Traceback" not in err, err


def test_gradient_clipping_is_not_a_trainer_default(tone_data, tmp_path):
    from avtag.train import TaggingModule, TrainCLI

    config = _tiny_config(tone_data, tmp_path, devices=1)
    cli = TrainCLI(TaggingModule, ClipDataModule, args=["--config", str(config)], run=False)
    assert cli.trainer.gradient_clip_val is None


@pytest.mark.parametrize(("mode", "expected"), [("none", 0.5), (0.3, 0.3), ("0.25", 0.25)])
def test_fixed_decision_threshold_modes_tune_nothing(tone_data, tmp_path, mode, expected):
    import lightning as L

    module = tiny_module(decision_thresholds=mode)
    data = ClipDataModule(str(tone_data / "train.jsonl"), str(tone_data / "val.jsonl"), batch_size=12, num_workers=0,
                          epoch_batches=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, data)
    assert module.thresholds == [expected] * 4
    assert {"val_map", "val_mauc", "val_dprime", "val_micro_f1"} <= set(trainer.callback_metrics)


@pytest.mark.parametrize("mode", ["tunedd", 1.5, 0.0, True])
def test_bad_decision_thresholds_are_one_line(mode):
    from avtag.errors import AvtagError

    with pytest.raises(AvtagError, match="decision_thresholds"):
        tiny_module(decision_thresholds=mode)


def test_the_small_cpu_recipe_is_a_documented_choice_with_its_values():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from avtag.train import TaggingModule, TrainCLI

    path = PROJECT_ROOT / "configs" / "crnn_cpu_small.yaml"
    assert "OUR DOCUMENTED CHOICE, NOT A PAPER RECIPE" in path.read_text()
    cli = TrainCLI(TaggingModule, ClipDataModule, run=False,
                   args=["--config", str(path), "--model.classes", "[a, b, c]", "--trainer.logger", "false"])
    module, trainer = cli.model, cli.trainer
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002
    assert trainer.gradient_clip_val is None and module.decision_thresholds == "tuned"
    assert module.model.model_args["conv_channels"] == [16, 16, 32, 32] and module.model.model_args["rnn_hidden"] == 32
    assert module.frontend.sample_rate == 16000 and module.frontend.hop_length == 160 and module.frontend.n_mels == 60
    assert sum(p.numel() for p in module.model.parameters()) < 100_000  # small: trains in minutes on a CPU
    assert cli.datamodule.batch_size == 16 and not cli.datamodule.balanced
    best = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor == "val_micro_f1"]
    assert best and Path(best[0].dirpath) == Path("runs/crnn_cpu_small/checkpoints").resolve() and best[0].filename == "best"
