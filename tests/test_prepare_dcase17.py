"""End to end: `avtag prepare dcase17` (avtag.recipes.dcase17) on a handful of synthetic clips
named after real ids: reports, packs, reruns after a kill, file preference, worker hygiene."""

from __future__ import annotations

import csv
from pathlib import Path
import sys

import numpy as np
import pytest
import soundfile
from conftest import PROJECT_ROOT, shared_path
from test_dcase17 import make_mini_official_dir

from avtag.data.manifests import EventSpan, read_manifest
from avtag.data.pack import PackReader


def load_script():
    """The recipe module (``scripts/prepare_dcase17.py`` is a thin wrapper of it)."""
    from avtag.recipes import dcase17

    return dcase17


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
    assert by_split["validation"] == 0 and by_split["train"] > 100  # made from present clips: none here
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


def _prepare(official, audio, out, *extra: str) -> int:
    from avtag.cli import main

    try:
        return main(["prepare", "dcase17", "--official-dir", str(official), "--audio-dir", str(audio), "--out", str(out),
                     "--splits", "test", "--workers", "1", "--validation-size", "34", *extra])
    except SystemExit as exit_info:
        return exit_info.code


GOOD, OTHER = "Y-5QrBL6MzLg_60.000_70.000", "Y-E0shPRxAbo_30.000_40.000"


def test_a_corrupt_flac_never_hides_a_good_wav_and_unmatched_files_are_counted(prepared, tmp_path, capsys):
    _, official, _, _ = prepared
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / f"{GOOD}.flac").write_bytes(b"fLaC" + b"\x00" * 64)  # corrupt, and sorted before the .wav
    soundfile.write(audio / f"{GOOD}.wav", tone(10.0, 20000), 20000)
    (audio / f"{OTHER}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # corrupt wav ...
    soundfile.write(audio / f"{OTHER}.flac", tone(10.0, 16000), 16000)  # ... with a good flac
    (audio / "notes.wav").write_bytes(b"not a clip")
    soundfile.write(audio / "Yaaaaaaaaaaa_1.000_11.000.wav", tone(1.0, 8000), 8000)  # a clip of no list
    out = tmp_path / "out"
    assert _prepare(official, audio, out) == 0
    printed = capsys.readouterr().out
    assert sorted(r.id for r in read_manifest(out / "test.jsonl")) == [GOOD, OTHER]
    with (out / "failures.csv").open(newline="") as fh:
        assert list(csv.DictReader(fh)) == []
    assert "audio files matching no clip: 2 (1 not a clip name, 1 a clip in none of the lists" in printed
    with (out / "unmatched.csv").open(newline="") as fh:
        assert sorted(Path(r["path"]).name for r in csv.DictReader(fh)) == ["Yaaaaaaaaaaa_1.000_11.000.wav", "notes.wav"]


def test_a_rerun_after_a_kill_and_a_split_that_packs_nothing_keep_the_old_pack(prepared, tmp_path, capsys):
    import h5py

    _, official, _, _ = prepared
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / f"{GOOD}.wav", tone(10.0, 20000), 20000)
    out = tmp_path / "out"
    assert _prepare(official, audio, out) == 0
    pack, manifest = (out / "test.h5").read_bytes(), (out / "test.jsonl").read_text()
    # a killed run left its temporary pack behind, still open (and locked) by an orphan
    orphan = h5py.File(out / "test.h5.tmp", "w")
    try:
        (audio / f"{GOOD}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # now nothing decodes
        capsys.readouterr()
        assert _prepare(official, audio, out) == 0
        printed = capsys.readouterr().out
    finally:
        orphan.close()
    assert (out / "test.h5").read_bytes() == pack and (out / "test.jsonl").read_text() == manifest
    assert "test: no clip packed; its previous pack and manifest are kept" in printed
    (audio / f"{GOOD}.wav").unlink()  # no clip found at all: same
    assert _prepare(official, audio, out) == 0
    assert (out / "test.h5").read_bytes() == pack and (out / "test.jsonl").read_text() == manifest


def test_workers_leave_with_the_main_process(tmp_path):
    """SIGKILL the main process: its spawned decoders notice (watchdog) and exit by themselves."""
    import os
    import signal
    import subprocess
    import time

    script = (
        "import sys, time\n"
        "from avtag.recipes.dcase17 import Decoder\n"
        "decoder = Decoder(2)\n"
        "list(decoder.run([([], 8000)] * 4))\n"
        "print(' '.join(str(p) for p in decoder.pool._processes), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    main = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    workers = [int(p) for p in main.stdout.readline().split()]
    assert len(workers) == 2
    main.send_signal(signal.SIGKILL)
    main.wait()
    deadline = time.monotonic() + 60
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in workers if _alive(p)]
    assert not alive, f"orphaned decoders: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_the_summary_reports_the_validation_split_on_the_list_and_on_the_clips_present(prepared):
    _, _, out, _ = prepared
    report = (out / "report.txt").read_text()
    assert "validation split, official list: 34 clips" not in report  # 34 positives, fewer clips when multi-label
    official = [line for line in report.splitlines() if line.startswith("validation split, official list:")]
    present = [line for line in report.splitlines() if line.startswith("validation split, clips present (used): 0 clips")]
    assert len(official) == 1 and "2-" in official[0].split("clips, ")[1][:3] and len(present) == 1  # every class >= 2
