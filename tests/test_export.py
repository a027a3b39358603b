"""`avtag export` / `avtag models`: exports reproduce the checkpoint exactly and loading
never runs pickled code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avtag.audio.tagger import AudioTagger
from avtag.cli import main

from test_train import RATE, SECONDS, TONE_CLASSES, tiny_module


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    """A checkpoint dict as Lightning writes it, with the module's "avtag" entry."""
    torch.manual_seed(0)
    module = tiny_module(frontend_args={"sample_rate": RATE, "clip_seconds": SECONDS, "standardize": True})
    with torch.no_grad():  # non-trivial front-end statistics and BN running stats must travel too
        module.frontend.feature_mean.uniform_(-12.0, -8.0)
        module.frontend.feature_std.uniform_(1.0, 3.0)
        for name, buffer in module.model.named_buffers():
            if "running_var" in name:
                buffer.uniform_(0.5, 2.0)
    module.thresholds = [0.3, 0.4, 0.5, 0.6]
    content = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(content)
    path = tmp_path / "model.ckpt"
    torch.save(content, path)
    return path


def test_export_then_import_gives_identical_outputs(checkpoint, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(checkpoint), str(out)]) == 0
    assert "exported crnn" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == TONE_CLASSES and config["thresholds"] == [0.3, 0.4, 0.5, 0.6]
    assert config["frontend"]["standardize"] is True

    from_checkpoint = AudioTagger.from_pretrained(checkpoint).eval()
    exported = AudioTagger.from_pretrained(out).eval()
    waveform = torch.randn(3, int(SECONDS * RATE), generator=torch.Generator().manual_seed(1)) * 0.2
    with torch.no_grad():
        a, b = from_checkpoint(waveform), exported(waveform)
    assert torch.equal(a.clip_probs, b.clip_probs) and torch.equal(a.frame_probs, b.frame_probs)
    assert a.clip_probs.std() > 0  # a real, input-dependent output
    assert exported.thresholds == [0.3, 0.4, 0.5, 0.6]


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_loading_never_unpickles_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.ckpt"
    torch.save({"avtag": _Exploit()}, bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(bad), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "evil.ckpt" in err
    assert not (tmp_path / "PWNED").exists()
    control = tmp_path / "control"  # the file really is an exploit: unrestricted unpickling runs it
    control.mkdir()
    monkeypatch.chdir(control)
    torch.load(bad, weights_only=False)
    assert (control / "PWNED").exists()


@pytest.mark.parametrize("problem", ["missing", "garbage", "empty_dir"])
def test_bad_checkpoint_path_exits_2_with_one_line(tmp_path, capsys, problem):
    path = tmp_path / "x.ckpt"
    if problem == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif problem == "empty_dir":
        path = tmp_path / "export_dir"
        path.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(path), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and path.name in err
    assert not (tmp_path / "out").exists()


def test_models_lists_the_registry(capsys):
    from avtag.audio.models.base import available_models

    assert main(["models"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == available_models() and "crnn" in listed


def test_models_verbose_lists_every_constructor_argument_with_its_default(capsys):
    import inspect

    from avtag.audio.models.base import available_models, get

    assert main(["models", "--verbose"]) == 0
    printed = capsys.readouterr().out
    sections = {}
    for line in printed.splitlines():
        if not line.startswith(" "):
            current = sections.setdefault(line.split()[0], [])
        else:
            current.append(line.split(":")[0].split()[0])
    assert list(sections) == available_models()
    for name, arguments in sections.items():
        expected = [p for p in inspect.signature(get(name).__init__).parameters if p != "self"]
        assert arguments == expected, name
    assert "    conv_channels: Sequence[int]  (default (64, 64, 128, 128))" in printed


# ----------------------------------------------------------------------------- broken checkpoints


def _entry(path: Path) -> dict:
    return torch.load(path, weights_only=True)["avtag"]


BROKEN_ENTRIES = {
    "no_model_name": lambda e: e.pop("model_name"),
    "model_name_not_a_string": lambda e: e.update(model_name=7),
    "unknown_model": lambda e: e.update(model_name="no_such_model"),
    "model_args_a_list": lambda e: e.update(model_args=[1, 2]),
    "unknown_model_arg": lambda e: e["model_args"].update(wings=2),
    "no_frontend": lambda e: e.pop("frontend"),
    "frontend_a_string": lambda e: e.update(frontend="crnn"),
    "hop_length_0": lambda e: e["frontend"].update(hop_length=0),
    "hop_length_a_string": lambda e: e["frontend"].update(hop_length="100"),
    "nan_threshold": lambda e: e["thresholds"].__setitem__(1, float("nan")),
    "inf_clip_seconds": lambda e: e["frontend"].update(clip_seconds=float("inf")),
    "threshold_a_string": lambda e: e["thresholds"].__setitem__(0, "0.5"),
    "threshold_above_1": lambda e: e["thresholds"].__setitem__(0, 3.0),
    "too_few_thresholds": lambda e: e["thresholds"].pop(),
    "classes_not_names": lambda e: e.update(classes=[1, 2, 3, 4]),
    "five_names_four_outputs": lambda e: e.update(classes=TONE_CLASSES + ["extra"], thresholds=[0.5] * 5),
    "weights_not_tensors": lambda e: e.update(state_dict={"a": 1}),
    "wrong_weight_shapes": lambda e: e["state_dict"].update({k: torch.zeros(1) for k in list(e["state_dict"])[:1]}),
    "nan_weights": lambda e: next(v for v in e["state_dict"].values() if v.is_floating_point()).fill_(float("nan")),
}


def _one_line_exit_2(capsys, argv: list[str], name: str) -> str:
    from avtag.evaluate import main as evaluate_main

    runner = evaluate_main if argv[0] == "evaluate" else main
    with pytest.raises(SystemExit) as exit_info:
        runner(argv[1:] if argv[0] == "evaluate" else argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 0 and err.startswith("error:") and name in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("problem", sorted(BROKEN_ENTRIES))
def test_broken_checkpoints_are_one_line_for_export_and_evaluate(checkpoint, tmp_path, capsys, problem):
    content = torch.load(checkpoint, weights_only=True)
    BROKEN_ENTRIES[problem](content["avtag"])
    broken = tmp_path / f"{problem}.ckpt"
    torch.save(content, broken)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "labels": [], "audio": "a.wav"}\n')
    _one_line_exit_2(capsys, ["export", str(broken), str(tmp_path / "out")], broken.name)
    assert not (tmp_path / "out" / "config.json").exists()
    _one_line_exit_2(capsys, ["evaluate", "--checkpoint", str(broken), "--manifest", str(manifest),
                              "--out", str(tmp_path / "eval")], broken.name)


def test_export_stores_a_weights_digest_and_a_bit_flip_is_refused(checkpoint, tmp_path, capsys):
    import hashlib

    out = tmp_path / "export"
    assert main(["export", str(checkpoint), str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    data = bytearray((out / "model.safetensors").read_bytes())
    assert config["weights_sha256"] == hashlib.sha256(data).hexdigest()
    data[-3] ^= 0x01  # one bit of one weight
    (out / "model.safetensors").write_bytes(bytes(data))
    err = _one_line_exit_2(capsys, ["export", str(out), str(tmp_path / "again")], "model.safetensors")
    assert "weights_sha256" in err
    with pytest.raises(Exception, match="weights_sha256"):
        AudioTagger.from_pretrained(out)


@pytest.mark.parametrize("problem", ["no_digest", "nan_literal", "not_json", "an_array", "threshold_null"])
def test_broken_export_config_is_one_line(checkpoint, tmp_path, capsys, problem):
    out = tmp_path / "export"
    assert main(["export", str(checkpoint), str(out)]) == 0
    capsys.readouterr()
    text = (out / "config.json").read_text()
    config = json.loads(text)
    if problem == "no_digest":
        config.pop("weights_sha256")
        text = json.dumps(config)
    elif problem == "nan_literal":
        text = text.replace('"thresholds": [\n    0.3', '"thresholds": [\n    NaN')
        assert "NaN" in text
    elif problem == "not_json":
        text = text[: len(text) // 2]
    elif problem == "an_array":
        text = "[]"
    else:
        config["thresholds"][0] = None
        text = json.dumps(config)
    (out / "config.json").write_text(text)
    _one_line_exit_2(capsys, ["export", str(out), str(tmp_path / "again")], "config.json" if problem != "threshold_null" else "export")


def test_export_refuses_a_class_list_that_does_not_fit_the_model(checkpoint, tmp_path):
    from avtag.errors import CheckpointError

    tagger = AudioTagger.from_pretrained(checkpoint)
    tagger.classes = TONE_CLASSES + ["extra"]
    tagger.thresholds = [0.5] * 5
    with pytest.raises(CheckpointError, match="5 class names for a model with 4 outputs"):
        tagger.export(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
