"""The README's library examples, run verbatim.

``SNIPPETS`` is read from README.md (the python block after each ``<!-- example: NAME -->``
marker), so the README cannot drift from what is tested. Each is written to a file and run with
``runpy`` in a folder holding the files it names: ``crnn_export/`` (an untrained CRNN export),
``street.wav``, ``street.mp4`` (a real clip from ../shared) and ``validation_outputs.npz`` /
``test_outputs.npz`` (made-up branch outputs).
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import shared_path
from test_run import export_tiny_crnn

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippets() -> dict[str, str]:
    """The python block after each ``<!-- example: NAME -->`` marker of the README."""
    found = re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", README.read_text(), re.S)
    return dict(found)


SNIPPETS = readme_snippets()


def test_readme_has_every_example():
    assert set(SNIPPETS) == {"models", "audio", "video", "fusion", "run"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    export_tiny_crnn(root / "crnn_export")
    rng = np.random.default_rng(0)
    sf.write(root / "street.wav", (0.1 * rng.standard_normal(44100 * 4)).astype(np.float32), 44100)
    for name, n in (("validation_outputs.npz", 200), ("test_outputs.npz", 50)):
        labels = rng.random((n, 17)) < 0.15
        np.savez(root / name, audio=np.clip(labels * 0.4 + rng.random((n, 17)) * 0.6, 0, 1),
                 video=np.clip(labels * 0.3 + rng.random((n, 17)) * 0.5, 0, 1), labels=labels,
                 ids=np.array([f"{name[:4]}{i}" for i in range(n)]))
    return root


def run_snippet(name: str, workdir, monkeypatch, capsys) -> str:
    script = workdir / f"example_{name}.py"
    script.write_text(SNIPPETS[name])
    monkeypatch.chdir(workdir)
    runpy.run_path(str(script), run_name="__main__")
    return capsys.readouterr().out


def test_audio_example(workdir, monkeypatch, capsys):
    out = run_snippet("audio", workdir, monkeypatch, capsys)
    assert "torch.Size([1, 17]) torch.Size([1, 100, 17]) 0.1" in out
    assert "Train horn" in out and "Motorcycle" in out


def test_fusion_example(workdir, monkeypatch, capsys):
    out = run_snippet("fusion", workdir, monkeypatch, capsys)
    assert "'fused'" in out and "(50, 17)" in out
    assert (workdir / "fusion.json").is_file()


def test_video_example(workdir, monkeypatch, capsys):
    (workdir / "street.mp4").unlink(missing_ok=True)
    (workdir / "street.mp4").symlink_to(shared_path("data", "videos", "seoul.mp4"))
    out = run_snippet("video", workdir, monkeypatch, capsys)
    assert out.count("key frame at") == 4


def test_run_example(workdir, monkeypatch, capsys):
    (workdir / "street.mp4").unlink(missing_ok=True)
    (workdir / "street.mp4").symlink_to(shared_path("data", "videos", "chaplin.mp4"))
    out = run_snippet("run", workdir, monkeypatch, capsys)
    assert "street.mp4: audio+video" in out
    assert "video evidence (uncalibrated, top 3)" in out and "paper-default" in out
    assert (workdir / "street.html").read_text().startswith("<!DOCTYPE html>")


def test_models_example(workdir, monkeypatch, capsys):
    out = run_snippet("models", workdir, monkeypatch, capsys)
    for name in ("crnn", "multilevel", "sca", "mmnet", "mmnet_ms", "glat", "cnn10", "multilevel_embeddings"):
        assert f"'{name}'" in out
