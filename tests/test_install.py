"""The installation itself: the torch triple's compiled extensions load, and `avtag doctor` works.

If torchaudio's C++ extension was built against another torch (torchaudio 2.11.1 against torch
2.11.0 broke every fresh install), this file fails with one line naming the versions, instead of
200 tests failing with the same traceback.
"""

import subprocess
import sys
from importlib import metadata

import pytest


def _versions() -> str:
    return ", ".join(f"{name} {metadata.version(name)}" for name in ("torch", "torchvision", "torchaudio"))


def test_torchaudio_extension_loads_and_computes_a_mel_spectrogram():
    try:
        import torch
        import torchaudio
    except Exception as err:  # noqa: BLE001 - the message is the point of this test
        pytest.fail(f"torchaudio does not import against the installed torch ({_versions()}): {err}", pytrace=False)
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / 16000).unsqueeze(0)
    try:
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40)(tone)
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"torchaudio's MelSpectrogram fails ({_versions()}): {err}", pytrace=False)
    assert mel.shape == (1, 40, 101)
    peak_band = int(mel[0].mean(dim=1).argmax())
    # 1 kHz lies in the lower third of a 40-band mel scale up to 8 kHz (HTK: 1000 Hz = 1000 mel of ~2840)
    assert 10 <= peak_band <= 17, f"1 kHz tone peaks in mel band {peak_band} ({_versions()})"


def test_the_triple_matches_the_exact_pins():
    from avtag.doctor import pinned_versions

    pins = pinned_versions()
    for name in ("torch", "torchvision", "torchaudio"):
        assert name in pins, f"pyproject.toml must pin {name} exactly (==)"
        installed = metadata.version(name).split("+")[0]
        assert installed == pins[name], f"{name} {metadata.version(name)} installed, pinned =={pins[name]}"


def test_doctor_reports_versions_embedded_weights_and_cuda():
    """``avtag --version --verbose`` is ``avtag doctor`` (one fresh process: doctor imports every
    media, vector and training package, ~10 s); the verb itself is dispatched in-process below."""
    result = subprocess.run([sys.executable, "-m", "avtag", "--version", "--verbose"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for expected in ("torch ", "torchaudio ", "pinned ==2.11.0", "decord", "gensim", "EfficientNet-Lite0",
                     "GloVe 6B-50d", "cuda", "no problems found"):
        assert expected in result.stdout


def test_the_doctor_verb_is_the_same_entry(monkeypatch):
    from avtag import cli, doctor

    called = []
    monkeypatch.setattr(doctor, "main", lambda argv=None: called.append(argv) or 0)
    assert cli.main(["doctor"]) == 0 and called == [[]]


def test_doctor_counts_problems_one_line_each(monkeypatch, capsys):
    from avtag import doctor

    monkeypatch.setattr(doctor, "pinned_versions", lambda: {"torch": "0.0.1", "torchvision": "0.26.0",
                                                           "torchaudio": "2.11.0"})
    monkeypatch.setattr(doctor, "check_cuda", lambda problems, require=False: ["cuda  not checked"])
    assert doctor.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    problems = [line for line in err if line.startswith("problem: ")]
    assert len(problems) == 1 and "torch" in problems[0] and "==0.0.1" in problems[0]
