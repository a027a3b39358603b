"""``python -m avtag.run``: every real clip end to end, audio-only input, sliding windows,
time ranges, the JSON round trip and every user-error path (one line, exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag.errors import CheckpointError
from avtag.events import event_names
from avtag.fusion import PAPER_VIDEO_EVENTS, FusionModel
from avtag.run import (
    AnalysisResult,
    active_ranges,
    analyse,
    format_table,
    load_audio_tagger,
    main,
    merge_window_frames,
    window_starts,
)
from tests.conftest import PROJECT_ROOT, shared_path

CLIPS = ["car-detection.mp4", "chaplin.mp4", "flipping_a_pancake.mkv", "motorcycle.mp4", "seoul.mp4",
         "v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4"]
PAPER_AUDIO_WEIGHTS = np.array([0.2 if n in PAPER_VIDEO_EVENTS else 0.8 for n in event_names()])


def export_tiny_crnn(out_dir: Path, thresholds: float = 0.5) -> Path:
    """An untrained (seeded) CRNN AudioTagger export: enough to exercise the audio path."""
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger

    torch.manual_seed(0)
    tagger = AudioTagger(build_model("crnn"), LogMelFrontEnd.from_preset("crnn"), thresholds=[thresholds] * 17,
                         metadata={"note": "untrained, for tests"})
    return tagger.export(out_dir)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return export_tiny_crnn(tmp_path_factory.mktemp("crnn"))


@pytest.fixture(scope="module")
def tagger(checkpoint):
    return load_audio_tagger(checkpoint)


@pytest.fixture(scope="module")
def video_branch():
    """The video branch at 0.5 frame/s (the default is 3) to keep the suite quick."""
    from avtag.video.branch import VideoBranch, VideoBranchConfig

    return VideoBranch(VideoBranchConfig(fps=0.5, max_side=256, device="cpu")).load()


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory) -> Path:
    """25 s of noise with a 1 kHz tone burst at 12-14 s (stereo, 16 kHz)."""
    rng = np.random.default_rng(0)
    sr = 16000
    audio = 0.05 * rng.standard_normal((25 * sr, 2))
    t = np.arange(2 * sr) / sr
    audio[12 * sr:14 * sr] += 0.5 * np.sin(2 * np.pi * 1000 * t)[:, None]
    path = tmp_path_factory.mktemp("wav") / "noise.wav"
    sf.write(path, audio.astype(np.float32), sr)
    return path


# --------------------------------------------------------------------------- pure helpers


def test_window_starts():
    assert window_starts(8.0, 10.0) == [0.0]
    assert window_starts(10.0, 10.0) == [0.0]
    assert window_starts(20.0, 10.0) == [0.0, 5.0, 10.0]
    assert window_starts(23.0, 10.0) == [0.0, 5.0, 13.0]  # end-aligned, never < a hop after the previous
    starts = window_starts(3600.0, 10.0)
    assert len(starts) == 719 and starts[-1] == 3590.0


def test_merge_window_frames_takes_the_maximum_on_one_timeline():
    a = np.zeros((100, 2))
    b = np.zeros((100, 2))
    a[60:70, 0] = 0.9
    b[0:20, 0] = 0.5  # window 2 starts at 5 s: frames 50-69 on the file timeline
    b[90:100, 1] = 0.7  # past the file end (12 s): dropped
    merged = merge_window_frames([a, b], [0.0, 5.0], 0.1, 12.0)
    assert merged.shape == (120, 2)
    np.testing.assert_allclose(merged[50:60, 0], 0.5)
    np.testing.assert_allclose(merged[60:70, 0], 0.9)
    assert merged[:, 1].max() == 0.0


def test_active_ranges_bridges_small_gaps_only():
    active = np.zeros(100, dtype=bool)
    active[10:20] = active[22:30] = True  # 0.2 s gap: bridged
    active[50:55] = True  # 2 s gap: separate
    assert active_ranges(active, 0.1) == [(1.0, 3.0), (5.0, 5.5)]
    assert active_ranges(np.zeros(5, dtype=bool), 0.1) == []


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def real_results(tagger, video_branch):
    videos = shared_path("data", "videos")
    return {name: analyse(videos / name, audio_tagger=tagger, video_branch=video_branch) for name in CLIPS}


@pytest.mark.parametrize("name", CLIPS)
def test_every_real_clip_end_to_end(real_results, name):
    result = real_results[name]
    n = len(event_names())
    assert result.fused_probs.shape == (n,) and result.thresholds.shape == (n,)
    assert result.duration > 1.0
    assert result.windows and len(result.windows) == len(window_starts(result.duration, result.window_seconds))
    assert result.keyframes and all(k.objects for k in result.keyframes)
    for k in result.keyframes:  # each key frame lies in its window
        w = result.windows[k.window]
        assert w.start - 1e-6 <= k.time < w.start + result.window_seconds
    assert result.video_probs is not None and np.all((result.video_probs >= 0) & (result.video_probs <= 1 + 1e-9))
    if name == "seoul.mp4":
        assert result.mode == "video" and result.audio_probs is None
        assert any("no audio stream" in note for note in result.notes)
    elif name == "car-detection.mp4":
        assert result.mode == "video" and result.audio_probs is None
        assert any("silent" in note for note in result.notes)
    else:
        assert result.mode == "audio+video"
        assert result.frame_probs is not None and result.frame_probs.shape[1] == n
        assert result.frame_probs.shape[0] == pytest.approx(result.duration / result.frame_hop, abs=1)
        for w in result.windows:  # 004 §2.3 with the paper's published weights
            expected = PAPER_AUDIO_WEIGHTS * w.audio_probs + (1 - PAPER_AUDIO_WEIGHTS) * w.video_probs
            np.testing.assert_allclose(w.fused_probs, expected)
        np.testing.assert_allclose(result.audio_probs, np.max([w.audio_probs for w in result.windows], axis=0))
        for event, ranges in result.time_ranges.items():
            assert result.detected[event_names().index(event)]
            assert all(0.0 <= a < b <= result.duration + 1e-6 for a, b in ranges)
    np.testing.assert_allclose(result.fused_probs, np.max([w.fused_probs for w in result.windows], axis=0))
    np.testing.assert_array_equal(result.detected, result.fused_probs >= result.thresholds)
    table = format_table(result)
    assert all(event in table for event in event_names())


def test_the_motorcycle_clip_is_tagged_motorcycle_by_video(real_results):
    result = real_results["motorcycle.mp4"]
    assert event_names()[int(np.argmax(result.video_probs))] == "Motorcycle"


def test_audio_only_file_runs_the_audio_branch_in_sliding_windows(tagger, noise_wav):
    result = analyse(noise_wav, audio_tagger=tagger)
    assert result.mode == "audio" and result.video_probs is None and not result.keyframes
    assert result.duration == pytest.approx(25.0)
    assert [w.start for w in result.windows] == [0.0, 5.0, 10.0, 15.0]
    np.testing.assert_allclose(result.audio_probs, np.max([w.audio_probs for w in result.windows], axis=0))
    np.testing.assert_array_equal(result.thresholds, tagger.thresholds)
    assert result.frame_probs.shape == (250, 17)
    # merged frames at the file's 12-14 s equal the max over the windows that cover them
    single = tagger.predict(sf.read(noise_wav)[0][10 * 16000:20 * 16000].T, 16000)
    assert np.all(result.frame_probs[120:140] >= single.frame_probs[0, 20:40].numpy() - 1e-5)


def test_audio_only_file_without_checkpoint_is_a_user_error(noise_wav):
    with pytest.raises(CheckpointError, match="needs --audio-checkpoint"):
        analyse(noise_wav)


def test_separate_audio_file_and_a_fusion_file(tagger, video_branch, tmp_path):
    noise_wav = tmp_path / "short.wav"
    sf.write(noise_wav, 0.1 * np.random.default_rng(1).standard_normal(5 * 16000).astype(np.float32), 16000)
    fusion = FusionModel.paper_default([0.9] * 17, [0.05] * 17)
    fusion.audio_weights[:] = 0.5
    fusion.thresholds[:] = 0.3
    result = analyse(shared_path("data", "videos", "seoul.mp4"), audio_path=noise_wav, audio_tagger=tagger,
                     video_branch=video_branch, fusion=fusion)
    assert result.mode == "audio+video" and result.audio_input == str(noise_wav)
    np.testing.assert_allclose(result.windows[0].fused_probs,
                               0.5 * result.windows[0].audio_probs + 0.5 * result.windows[0].video_probs)
    np.testing.assert_array_equal(result.thresholds, 0.3)
    np.testing.assert_array_equal(result.audio_thresholds, 0.9)  # time ranges use the fusion file's audio thresholds


def test_no_checkpoint_runs_video_alone_and_says_so(video_branch, capsys):
    result = analyse(shared_path("data", "videos", "chaplin.mp4"), video_branch=video_branch)
    assert result.mode == "video" and result.fusion["method"] == "single branch"
    assert sum("no audio checkpoint" in note for note in result.notes) == 1
    np.testing.assert_array_equal(result.fused_probs, result.video_probs)


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "avtag.run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT_ROOT, env=env)


def test_cli_json_round_trips_and_matches_the_table(checkpoint, tmp_path):
    video = shared_path("data", "videos", "chaplin.mp4")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    proc = run_cli("--video", str(video), "--audio-checkpoint", str(checkpoint), "--json", str(out_json),
                   "--report", str(out_png), "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out_json.read_text())
    result = AnalysisResult.from_json(data)
    assert result.to_json() == data
    assert proc.stdout.strip() == format_table(result)  # JSON holds everything shown
    assert data["mode"] == "audio+video" and len(data["windows"]) == 1 and len(data["keyframes"]) == 4
    assert out_png.read_bytes().startswith(b"\x89PNG")


def test_cli_main_in_process_without_checkpoint(tmp_path, capsys):
    out = tmp_path / "seoul.json"
    assert main(["--video", str(shared_path("data", "videos", "seoul.mp4")), "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "seoul.mp4: video" in printed and "note: the video has no audio stream" in printed
    assert json.loads(out.read_text())["audio_probs"] is None


USER_ERRORS = {
    "missing path": (lambda d: ["--video", str(d / "nope.mp4")], "no such file"),
    "a directory": (lambda d: ["--video", str(d)], "is a directory"),
    "empty file": (lambda d: ["--video", str(d / "empty.mp4")], "empty file"),
    "non-media file": (lambda d: ["--video", str(d / "text.mp4")], "not a readable media file"),
    "truncated file": (lambda d: ["--video", str(d / "truncated.mp4")], "not a readable media file"),
    "audio-only without checkpoint": (lambda d: ["--video", str(d / "tone.wav")], "needs --audio-checkpoint"),
    "missing --audio": (lambda d: ["--video", str(d / "tone.wav"), "--audio", str(d / "no.wav")], "no such file"),
    "missing checkpoint": (lambda d: ["--video", str(d / "tone.wav"), "--audio-checkpoint", str(d / "nockpt")],
                           "no such audio checkpoint"),
    "checkpoint dir without export": (lambda d: ["--video", str(d / "tone.wav"), "--audio-checkpoint", str(d / "ckdir")],
                                      "not an avtag export"),
    "garbage .ckpt": (lambda d: ["--video", str(d / "tone.wav"), "--audio-checkpoint", str(d / "bad.ckpt")],
                      "not a readable checkpoint"),
    "unreadable fusion file": (lambda d: ["--video", str(d / "tone.wav"), "--fusion", str(d / "fusion.json")],
                               "not a readable avtag fusion file"),
    "bad report suffix": (lambda d: ["--video", str(d / "tone.wav"), "--report", str(d / "r.pdf")],
                          "must end in .html or .png"),
}


@pytest.fixture(scope="module")
def user_error_runs(tmp_path_factory):
    """All user-error invocations, run concurrently once."""
    d = tmp_path_factory.mktemp("errors")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n")
    (d / "ckdir").mkdir()
    (d / "bad.ckpt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    (d / "fusion.json").write_text('{"format": "avtag-fusion/1", "classes": ')
    sf.write(d / "tone.wav", np.sin(np.arange(16000) / 5.0).astype(np.float32), 16000)
    videos = shared_path("data", "videos")
    (d / "truncated.mp4").write_bytes((videos / "motorcycle.mp4").read_bytes()[:4096])
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "avtag.run", *make(d)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=env)
        for name, (make, _) in USER_ERRORS.items()
    }
    return {name: (proc.wait(timeout=300), *proc.communicate()) for name, proc in procs.items()}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_are_one_line_with_exit_code_2(user_error_runs, case):
    code, stdout, stderr = user_error_runs[case]
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert USER_ERRORS[case][1] in lines[0]
    assert "Traceback" not in stderr and stdout == ""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_user_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--video", str(shared_path("data", "videos", "seoul.mp4")), "--device", "cuda"])
    assert info.value.code == 2


# --------------------------------------------------------------------------- speed-related behaviour


class CountingRecognizer:
    """Wraps a recognizer and counts the frames it is asked to recognise."""

    def __init__(self, recognizer):
        self.inner, self.frames_seen = recognizer, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, frames):
        self.frames_seen += len(frames)
        return self.inner(frames)


def test_overlapping_windows_recognise_each_frame_once_and_match_per_window_predictions(video_branch):
    from types import SimpleNamespace

    from avtag.run import run_video_branch
    from avtag.video.branch import VideoBranch
    from avtag.video.decode import decode_video

    decoded = decode_video(shared_path("data", "videos", "chaplin.mp4"), fps=2.0, max_side=256, with_audio=False)
    branch = VideoBranch(video_branch.config)
    branch._mapper = video_branch.mapper
    branch._recognizer = CountingRecognizer(video_branch.recognizer)
    starts = window_starts(float(decoded.duration), 4.0)  # hop 2 s: every frame lies in two windows
    assert len(starts) >= 3
    probs, keyframes, _ = run_video_branch(branch, SimpleNamespace(frames=decoded.frames, times=decoded.times),
                                           starts, 4.0)
    assert branch._recognizer.frames_seen == len(decoded.frames)
    for w, start in enumerate(starts):  # the same as analysing each window's frames on its own
        inside = (decoded.times >= start - 1e-6) & (decoded.times < start + 4.0 - 1e-6)
        alone = video_branch.predict(decoded.frames[inside], times=decoded.times[inside])
        np.testing.assert_allclose(probs[w], alone.event_probs, atol=1e-5)
        np.testing.assert_allclose([k.time for k in keyframes if k.window == w], alone.keyframe_times)


def test_a_failing_background_load_is_reported_and_restores_torch_threads(tmp_path):
    import torch

    from avtag.video.branch import VideoBranch, VideoBranchConfig

    threads = torch.get_num_threads()
    branch = VideoBranch(VideoBranchConfig(weights_path=str(tmp_path / "missing.safetensors"), device="cpu"))
    with pytest.raises(CheckpointError, match="weights file not found"):
        analyse(shared_path("data", "videos", "seoul.mp4"), video_branch=branch)
    assert torch.get_num_threads() == threads
