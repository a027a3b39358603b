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
