"""Batch evaluation of clips too long to decode whole (avtag.evaluation.long_clips): read a chunk
of windows at a time in the main process, with the same clip probabilities as a whole decode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import shared_path
from test_run import export_tiny_crnn


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return export_tiny_crnn(tmp_path_factory.mktemp("long") / "crnn")


def evaluate_folder(folder: Path, out: Path, checkpoint: Path, *extra: str) -> dict[str, dict]:
    from avtag.evaluation.cli import main

    assert main(["--clips-dir", str(folder), "--out", str(out), "--audio-checkpoint", str(checkpoint),
                 "--workers", "0", "--quiet", *extra]) == 0
    return {e["id"]: e for e in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_long_videos_stream_with_the_same_clip_probabilities(monkeypatch, checkpoint, tmp_path):
    import avtag.inference.stream as stream
    import avtag.video.decode as decode

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("motorcycle.mp4", "car-detection.mp4"):  # 13.4 s with sound; 30 s, silent track
        (folder / name).symlink_to(shared_path("data", "videos", name))
    whole = evaluate_folder(folder, tmp_path / "whole", checkpoint)

    monkeypatch.setattr(stream, "STREAM_MIN_SECONDS", 5.0)  # both clips are now "long"
    monkeypatch.setattr(stream, "CHUNK_WINDOWS", 2)
    monkeypatch.setattr(decode, "decode_video", lambda *a, **k: pytest.fail("a long clip was decoded whole"))
    monkeypatch.setattr(decode, "decode_audio", lambda *a, **k: pytest.fail("a long track was decoded whole"))
    streamed = evaluate_folder(folder, tmp_path / "streamed", checkpoint)

    for clip in ("motorcycle", "car-detection"):
        assert streamed[clip]["status"] == whole[clip]["status"] == "ok"
        assert "long video: decoded 2 windows at a time" in streamed[clip]["notes"]
        np.testing.assert_allclose(streamed[clip]["video"], whole[clip]["video"], atol=1e-5)
        assert streamed[clip]["duration"] == pytest.approx(whole[clip]["duration"], abs=0.05)
    np.testing.assert_allclose(streamed["motorcycle"]["audio"], whole["motorcycle"]["audio"], atol=1e-6)
    assert streamed["car-detection"]["audio"] is whole["car-detection"]["audio"] is None  # silent track
    assert "audio is silent" in streamed["car-detection"]["notes"]


def test_a_long_audio_file_is_read_a_window_at_a_time(monkeypatch, checkpoint, tmp_path):
    import avtag.audio.io as io
    import avtag.inference.stream as stream

    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(3)
    sf.write(folder / "long.wav", (0.1 * rng.standard_normal(12 * 20000)).astype(np.float32), 20000)  # model rate
    sf.write(folder / "quiet.flac", np.zeros(12 * 20000, np.float32), 20000)
    whole = evaluate_folder(folder, tmp_path / "whole", checkpoint)

    monkeypatch.setattr(stream, "AUDIO_STREAM_MIN_SECONDS", 5.0)
    monkeypatch.setattr(io, "load_audio", lambda *a, **k: pytest.fail("a long file was decoded whole"))
    streamed = evaluate_folder(folder, tmp_path / "streamed", checkpoint)
    np.testing.assert_allclose(streamed["long"]["audio"], whole["long"]["audio"], atol=1e-6)
    assert streamed["long"]["duration"] == whole["long"]["duration"] == pytest.approx(12.0)
    # a silent long file with no video is a failed clip, as when decoded whole
    assert streamed["quiet"]["status"] == whole["quiet"]["status"] == "failed"
    assert streamed["quiet"]["reason"] == whole["quiet"]["reason"]
