"""End to end: scripts/prepare_dcase17.py on a handful of synthetic clips named after real ids."""

from __future__ import annotations

import csv
import importlib.util
import sys

import numpy as np
import pytest
import soundfile
from conftest import PROJECT_ROOT, shared_path
from test_dcase17 import make_mini_official_dir

from avtag.data.manifests import EventSpan, read_manifest
from avtag.data.pack import PackReader


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_dcase17", PROJECT_ROOT / "scripts" / "prepare_dcase17.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and worker processes look the module up by name
    spec.loader.exec_module(module)
    return module


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    official = make_mini_official_dir(shared_path("data", "dcase17"), tmp_path_factory.mktemp("official"))
    audio = tmp_path_factory.mktemp("audio")
    (audio / "nested" / "deeper").mkdir(parents=True)
    # real testing-set ids, in the spellings downloaders produce
    soundfile.write(audio / "Y-5QrBL6MzLg_60.000_70.000.wav", tone(10.0, 44100, channels=2), 44100)  # stereo, Y
    soundfile.write(audio / "-E0shPRxAbo_30.000_40.000.flac", tone(9.5, 16000), 16000)  # no Y, FLAC
    soundfile.write(audio / "nested" / "deeper" / "-Gbohom8C4Q_30.000_40.000.wav", tone(10.0, 20000), 20000)
    (audio / "nested" / "-Qfk_Q2ctBs_30.000_40.000.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # corrupt
    (audio / "notes.wav").write_bytes(b"not a clip name: ignored")
    out = tmp_path_factory.mktemp("out")
    script = load_script()
    code = script.main(
        ["--official-dir", str(official), "--audio-dir", str(audio), "--out", str(out), "--workers", "2", "--validation-size", "34"]
    )
    return script, official, out, code


def test_report_counts_missing_and_unreadable_clips(prepared, capsys):
    _, _, out, code = prepared
    assert code == 0
    with (out / "missing.csv").open(newline="") as fh:
        missing = list(csv.DictReader(fh))
    by_split = {split: sum(row["split"] == split for row in missing) for split in ("train", "validation", "test", "evaluation")}
    assert by_split["test"] == 488 - 4 and by_split["evaluation"] == 1103
    assert by_split["validation"] == 34 and by_split["train"] > 100
    assert "Y-5QrBL6MzLg_60.000_70.000" not in {row["clip_id"] for row in missing}
    with (out / "failures.csv").open(newline="") as fh:
        failures = list(csv.DictReader(fh))
    assert [(f["split"], f["clip_id"]) for f in failures] == [("test", "Y-Qfk_Q2ctBs_30.000_40.000")]
    assert failures[0]["path"].endswith("nested/-Qfk_Q2ctBs_30.000_40.000.wav")
    assert "not a decodable audio" in failures[0]["reason"] and "Qfk" not in failures[0]["reason"]
    report = (out / "report.txt").read_text().splitlines()
    assert report[0].split() == ["class", "train", "missing/total", "validation", "missing/total", "test", "missing/total",
                                 "evaluation", "missing/total"]
    rows = {line[:34].strip(): line[34:].split() for line in report[2:]}
    assert rows["Train horn"][2] == "26/30"  # the 4 clips found are all train-horn clips (30 in the test set)
    assert rows["Car"][2] == "60/60"
    assert rows["all clips"][2:] == ["484/488", "1103/1103"]
    assert rows["unreadable"][2:] == ["1", "0"] and rows["packed"][2:] == ["3", "0"]


def test_packs_hold_resampled_mono_int16_clips(prepared):
    _, _, out, _ = prepared
    records = {r.id: r for r in read_manifest(out / "test.jsonl")}
    assert set(records) == {"Y-5QrBL6MzLg_60.000_70.000", "Y-E0shPRxAbo_30.000_40.000", "Y-Gbohom8C4Q_30.000_40.000"}
    assert records["Y-Gbohom8C4Q_30.000_40.000"].labels == ["Train horn", "Air horn, truck horn", "Train"]
    assert EventSpan("Train horn", 0.917, 2.029) in records["Y-5QrBL6MzLg_60.000_70.000"].events
    reader = PackReader(out / "test.h5")
    assert reader.sample_rate == 20000 and sorted(reader.keys()) == sorted(records)
    for key, seconds in [("Y-5QrBL6MzLg_60.000_70.000", 10.0), ("Y-E0shPRxAbo_30.000_40.000", 9.5)]:
        record = records[key]
        assert record.pack == "test.h5" and record.pack_key == key and record.duration == pytest.approx(seconds)
        samples, sr = reader.read(key)
        assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) == int(seconds * 20000)
        expected = tone(seconds, 20000)
        np.testing.assert_allclose(samples[2000:-2000], expected[2000:-2000], atol=2e-3)  # resampled 440 Hz tone
    assert not (out / "evaluation.h5").exists() and not (out / "evaluation.jsonl").exists()  # nothing found there


def test_user_errors_exit_2_with_one_line(prepared, tmp_path, capsys):
    script, official, _, _ = prepared
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--official-dir", str(official), "--audio-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "audio folder not found" in err and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--official-dir", str(tmp_path), "--audio-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "missing official file training_set.csv" in capsys.readouterr().err
