"""``avtag run`` / ``python -m avtag.run``: every real clip end to end, audio-only input, sliding
windows, time ranges, the JSON round trip, other class lists, padding that never decides, the
10.04 s clip, --top-k/--threshold, several files, --video-config, and every user-error path
(one line, exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag.errors import CheckpointError, InputFileError
from avtag.events import event_names
from avtag.fusion import PAPER_VIDEO_EVENTS, FusionModel
from avtag.inference.results import AnalysisResult
from avtag.inference.windows import active_ranges, merge_window_frames, window_starts
from avtag.run import analyse, format_table, load_audio_tagger, main  # the public names stay importable here
from tests.conftest import PROJECT_ROOT, shared_path

CLIPS = ["car-detection.mp4", "chaplin.mp4", "flipping_a_pancake.mkv", "motorcycle.mp4", "seoul.mp4",
         "v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4"]
PAPER_AUDIO_WEIGHTS = np.array([0.2 if n in PAPER_VIDEO_EVENTS else 0.8 for n in event_names()])


def export_tiny_crnn(out_dir: Path, thresholds: float = 0.5, classes: list[str] | None = None) -> Path:
    """An untrained (seeded) CRNN AudioTagger export: enough to exercise the audio path.
    ``classes``: another class list than the 17 DCASE events (the model gets that many outputs)."""
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger

    torch.manual_seed(0)
    names = classes or event_names()
    tagger = AudioTagger(build_model("crnn", num_classes=len(names)), LogMelFrontEnd.from_preset("crnn"),
                         classes=names, thresholds=[thresholds] * len(names), metadata={"note": "untrained, for tests"})
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
    assert len({k.time for k in result.keyframes}) == len(result.keyframes)  # never listed twice
    assert result.video_evidence and result.video_evidence[0].objects
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
    np.testing.assert_array_equal(result.detected, np.nan_to_num(result.thresholds, nan=2.0) <= result.fused_probs)
    if result.mode == "video":  # the video branch alone is uncalibrated: ranked, never decided
        assert result.threshold_source == "none" and not result.detected.any()
    table = format_table(result)
    assert all(event in table for event in event_names())
    ranked = [line.split()[0] for line in table.splitlines()[2:19]]
    assert ranked == [str(i) for i in range(1, 18)]


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
    table = format_table(result)
    # says something true: a ranking, the video evidence with its objects, how to calibrate
    assert "detected: - (no calibrated threshold" in table and "most likely (top 3): " in table
    assert "video evidence (uncalibrated, top 3)" in table and " <- " in table and "(video)" in table
    assert "avtag fusion fit" in table
    top = result.video_evidence[0]
    assert top.event == result.classes[int(np.argmax(result.video_probs))]
    assert sum(o.probability for o in top.objects) == pytest.approx(top.probability, abs=1e-6)


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
                               "not valid JSON"),
    "fusion file with NaN": (lambda d: ["--video", str(d / "tone.wav"), "--fusion", str(d / "nan.json")],
                             "non-finite"),
    "fusion file with wrong types": (lambda d: ["--video", str(d / "tone.wav"), "--fusion", str(d / "types.json")],
                                     "fusion file"),
    "fusion file classes not a list": (lambda d: ["--video", str(d / "tone.wav"), "--fusion",
                                                  str(d / "classes.json")], "no list of class names"),
    "silent audio-only file": (lambda d: [str(d / "silence.wav"), "--audio-checkpoint", str(d / "crnn")],
                               "silent"),
    "--json folder not creatable": (lambda d: [str(d / "tone.wav"), "--json", str(d / "text.mp4" / "out.json")],
                                    "cannot create the output folder"),
    "--threshold out of range": (lambda d: [str(d / "tone.wav"), "--threshold", "1.5"], "--threshold must be"),
    "--top-k zero": (lambda d: [str(d / "tone.wav"), "--top-k", "0"], "--top-k must be"),
    "--json with two inputs": (lambda d: [str(d / "tone.wav"), str(d / "tone.wav"), "--json", str(d / "o.json")],
                               "take one input"),
    "empty folder": (lambda d: [str(d / "ckdir")], "holds no video or audio file"),
    "bad --video-config": (lambda d: [str(d / "tone.wav"), "--video-config", str(d / "video.yaml")],
                           "unknown setting"),
    "no input": (lambda d: [], "give at least one file"),
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
    good = FusionModel.paper_default([0.5] * 17, [0.5] * 17).to_json()
    (d / "nan.json").write_text(json.dumps(dict(good, thresholds=[float("nan")] * 17)))
    (d / "types.json").write_text(json.dumps(dict(good, audio_weights={"Car": 0.5}, sources="x")))
    (d / "classes.json").write_text(json.dumps(dict(good, classes={"Car": 1})))
    (d / "video.yaml").write_text("fps: 1.0\nframes_per_second: 2\n")
    sf.write(d / "tone.wav", np.sin(np.arange(16000) / 5.0).astype(np.float32), 16000)
    sf.write(d / "silence.wav", np.zeros(16000, np.float32), 16000)
    export_tiny_crnn(d / "crnn")
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

    from avtag.inference.branches import run_video_windows
    from avtag.video.branch import VideoBranch
    from avtag.video.decode import decode_video

    decoded = decode_video(shared_path("data", "videos", "chaplin.mp4"), fps=2.0, max_side=256, with_audio=False)
    branch = VideoBranch(video_branch.config)
    branch._mapper = video_branch.mapper
    branch._recognizer = CountingRecognizer(video_branch.recognizer)
    starts = window_starts(float(decoded.duration), 4.0)  # hop 2 s: every frame lies in two windows
    assert len(starts) >= 3
    out = run_video_windows(branch, SimpleNamespace(frames=decoded.frames, times=decoded.times), starts, 4.0)
    assert branch._recognizer.frames_seen == len(decoded.frames)
    picked = []
    for w, start in enumerate(starts):  # the same as analysing each window's frames on its own
        inside = (decoded.times >= start - 1e-6) & (decoded.times < start + 4.0 - 1e-6)
        alone = video_branch.predict(decoded.frames[inside], times=decoded.times[inside])
        np.testing.assert_allclose(out.probs[w], alone.event_probs, atol=1e-5)
        np.testing.assert_allclose(out.predictions[w].keyframe_times, alone.keyframe_times)
        picked.extend(alone.keyframe_times)
    # a frame picked by two overlapping windows is listed once, under the first
    times = [k.time for k in out.keyframes]
    assert len(times) == len(set(times)) and set(times) == set(picked)


def test_a_failing_background_load_is_reported_and_restores_torch_threads(tmp_path):
    import torch

    from avtag.video.branch import VideoBranch, VideoBranchConfig

    threads = torch.get_num_threads()
    branch = VideoBranch(VideoBranchConfig(weights_path=str(tmp_path / "missing.safetensors"), device="cpu"))
    with pytest.raises(CheckpointError, match="weights file not found"):
        analyse(shared_path("data", "videos", "seoul.mp4"), video_branch=branch)
    assert torch.get_num_threads() == threads


# --------------------------------------------------------------------------- other class lists


OTHER_CLASSES = ["Car", "siren", "dog barking"]  # one DCASE event (shared with the video branch), two not


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    return export_tiny_crnn(tmp_path_factory.mktemp("esc"), classes=OTHER_CLASSES)


def test_a_checkpoint_with_its_own_classes_is_fused_on_the_shared_ones(other_checkpoint, video_branch):
    tagger = load_audio_tagger(other_checkpoint)
    result = analyse(shared_path("data", "videos", "chaplin.mp4"), audio_tagger=tagger, video_branch=video_branch)
    assert result.classes == OTHER_CLASSES and result.video_classes == ["Car"]
    assert result.mode == "audio+video" and result.fusion["fused_classes"] == ["Car"]
    w = result.windows[0]
    # Car: 004 §2.3 with the paper's audio weight 0.8 (Car is not one of the seven video events)
    assert w.fused_probs[0] == pytest.approx(0.8 * w.audio_probs[0] + 0.2 * w.video_probs[0])
    np.testing.assert_allclose(w.fused_probs[1:], w.audio_probs[1:])  # audio alone on the others
    assert np.isnan(w.video_probs[1:]).all()
    table = format_table(result)
    assert all(name in table for name in OTHER_CLASSES) and "Ambulance" not in table.split("most likely")[0]
    data = result.to_json()
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN for the classes video does not score
    assert data["classes"] == OTHER_CLASSES and data["video_probs"][1:] == [None, None]
    assert AnalysisResult.from_json(data).to_json() == data


def test_a_checkpoint_with_its_own_classes_on_an_audio_file(other_checkpoint, noise_wav):
    result = analyse(noise_wav, audio_tagger=load_audio_tagger(other_checkpoint))
    assert result.mode == "audio" and result.classes == OTHER_CLASSES
    assert result.frame_probs.shape == (250, 3) and result.threshold_source == "audio checkpoint"


def test_a_fusion_file_over_the_shared_classes(other_checkpoint, video_branch, tmp_path):
    from avtag.inference.cli import load_fusion_file

    fusion = FusionModel.paper_default([0.3], [0.2], classes=["Car"])
    fusion.audio_weights[:] = 0.25
    fusion.thresholds[:] = 0.01
    path = fusion.save(tmp_path / "fusion.json")
    result = analyse(shared_path("data", "videos", "chaplin.mp4"), audio_tagger=load_audio_tagger(other_checkpoint),
                     video_branch=video_branch, fusion=load_fusion_file(path))
    w = result.windows[0]
    assert w.fused_probs[0] == pytest.approx(0.25 * w.audio_probs[0] + 0.75 * w.video_probs[0])
    assert result.threshold_source == "fusion file" and result.thresholds[0] == 0.01
    np.testing.assert_allclose(result.thresholds[1:], 0.5)  # the checkpoint's own for the unfused classes
    with pytest.raises(InputFileError, match="no entry for 'Car'"):
        analyse(shared_path("data", "videos", "chaplin.mp4"), audio_tagger=load_audio_tagger(other_checkpoint),
                video_branch=video_branch, fusion=FusionModel.paper_default([0.5], [0.5], classes=["Bus"]))


# --------------------------------------------------------------------------- padding, 10.04 s, key frames


class PaddingDetector:
    """A model that fires (0.9) on padded frames and stays low (0.1) on real sound: the clip
    output of max pooling over all frames would detect every class in a padded window."""

    def __new__(cls, frontend, classes: int):
        import torch

        from avtag.audio.models.base import TaggingModel, TaggingOutput

        with torch.no_grad():
            pad_frame = frontend(torch.zeros(1, frontend.clip_samples))[0, 0]

        class _Model(TaggingModel):
            def __init__(self):
                super().__init__()
                self.register_buffer("pad_frame", pad_frame.clone())
                self.num_classes = classes
                self.unused = torch.nn.Parameter(torch.zeros(1))  # AudioTagger.device reads a parameter

            def forward(self, features):
                is_pad = torch.isclose(features, self.pad_frame, atol=1e-4).all(dim=-1)
                frames = torch.where(is_pad, 0.9, 0.1)[..., None].expand(-1, -1, self.num_classes)
                return TaggingOutput(clip_probs=frames.amax(dim=1), frame_probs=frames)

        return _Model()


@pytest.fixture(scope="module")
def padding_tagger():
    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.tagger import AudioTagger

    frontend = LogMelFrontEnd.from_preset("crnn")
    return AudioTagger(PaddingDetector(frontend, 17), frontend, thresholds=[0.5] * 17).eval()


def test_padding_never_decides_a_real_5_s_siren(padding_tagger):
    siren = shared_path("data", "esc50", "audio", "4-102871-A-42.flac")  # ESC-50 class "siren", 5 s
    direct = padding_tagger.predict(sf.read(siren)[0], sf.info(siren).samplerate)  # padded to 10 s
    assert direct.clip_probs.min() == pytest.approx(0.9)  # unmasked, the padding would decide
    result = analyse(siren, audio_tagger=padding_tagger)
    assert len(result.windows) == 1 and result.windows[0].valid_seconds == pytest.approx(5.0)
    np.testing.assert_allclose(result.audio_probs, 0.1)
    assert not result.detected.any() and result.time_ranges == {}
    assert result.frame_probs.shape[0] == round(5.0 / result.frame_hop) and result.padded_seconds == pytest.approx(5.0)
    assert any("the clip was padded" in n and "masked" in n for n in result.notes)
    assert "note: the clip was padded" in format_table(result)


def test_padded_frames_of_a_real_model_never_count(tagger):
    siren = shared_path("data", "esc50", "audio", "4-102871-A-42.flac")
    result = analyse(siren, audio_tagger=tagger)
    # the clip probability is the max over the real frames (MIL max pooling, 004 §2.1)
    np.testing.assert_allclose(result.audio_probs, result.frame_probs.max(axis=0))
    assert result.frame_probs.shape[0] == 50
    for ranges in result.time_ranges.values():
        assert all(b <= 5.0 + 1e-6 for _, b in ranges)


def test_a_silent_audio_file_is_a_user_error(tagger, tmp_path):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(5 * 16000, np.float32), 16000)
    with pytest.raises(InputFileError, match="silent"):
        analyse(silence, audio_tagger=tagger)


def test_a_10_04_s_clip_is_one_window_and_the_crop_is_noted(tagger, tmp_path):
    clip = tmp_path / "dcase_like.wav"
    sf.write(clip, 0.05 * np.random.default_rng(2).standard_normal(int(10.04 * 16000)).astype(np.float32), 16000)
    result = analyse(clip, audio_tagger=tagger)
    assert len(result.windows) == 1 and result.windows[0].start == 0.0
    assert result.cropped_seconds == pytest.approx(0.04, abs=1e-3) and result.padded_seconds == 0.0
    assert any("the last 0.04 s were cropped" in n for n in result.notes)


# --------------------------------------------------------------------------- --top-k, --threshold


def test_top_k_and_a_global_threshold(tagger, video_branch):
    video = shared_path("data", "videos", "chaplin.mp4")
    result = analyse(video, audio_tagger=tagger, video_branch=video_branch, top_k=5, threshold=0.3)
    assert result.threshold_source == "--threshold"
    np.testing.assert_array_equal(result.thresholds, 0.3)
    np.testing.assert_array_equal(result.detected, result.fused_probs >= 0.3)
    assert len(result.video_evidence) == min(5, int((result.windows[0].video_probs > 0).sum()))
    table = format_table(result)
    assert "most likely (top 5): " in table and "thresholds: --threshold" in table
    first = result.ranking()[0]
    assert table.splitlines()[2].split()[1] == result.classes[first].split()[0]


def test_video_alone_with_a_threshold_decides(video_branch, capsys, tmp_path):
    out = tmp_path / "seoul.json"
    code = main([str(shared_path("data", "videos", "seoul.mp4")), "--threshold", "0.2", "--top-k", "2",
                 "--json", str(out), "--quiet"])
    assert code == 0
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert data["threshold_source"] == "--threshold" and data["top_k"] == 2
    assert data["detected"] == [p >= 0.2 for p in data["fused_probs"]]
    assert len(data["video_evidence"]) <= 2


# --------------------------------------------------------------------------- several files, --video-config


def test_several_files_and_a_folder_one_row_each_a_bad_file_costs_only_itself(checkpoint, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.wav", "b.flac"):
        sf.write(folder / name, (0.05 * rng.standard_normal(3 * 16000)).astype(np.float32), 16000)
    (folder / "notes.txt").write_text("not media, and not a media suffix: skipped")
    (folder / "broken.wav").write_text("not a wav")
    jsonl, table = tmp_path / "tags.jsonl", tmp_path / "tags.csv"
    code = main([str(folder), "--audio-checkpoint", str(checkpoint), "--jsonl", str(jsonl), "--csv", str(table),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and "broken.wav" in errors[0] and "1 of 3 files could not be tagged" in errors[1]
    assert captured.out.count(": audio, ") == 2
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [Path(r["input"]).name for r in rows] == ["a.wav", "b.flac", "broken.wav"]
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert set(rows[0]["scores"]) == set(event_names()) and len(rows[0]["top_events"]) == 3
    import csv

    with table.open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["status"] for r in records] == ["ok", "ok", "error"] and records[2]["error"].startswith(str(folder))
    assert float(records[0]["Car"]) == pytest.approx(rows[0]["scores"]["Car"], abs=1e-4)


def test_video_config_sets_the_video_branch_and_device_comes_from_the_command_line(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text("fps: 0.5\nmax_side: 256\nnum_keyframes: 2\n")
    out = tmp_path / "r.json"
    assert main([str(shared_path("data", "videos", "seoul.mp4")), "--video-config", str(config), "--device", "cpu",
                 "--json", str(out), "--quiet"]) == 0
    video = json.loads(out.read_text())["models"]["video"]
    assert video["fps"] == 0.5 and video["max_side"] == 256 and video["num_keyframes"] == 2
    assert video["device"] == "cpu"
    assert len(json.loads(out.read_text())["keyframes"]) == 2


def test_outputs_are_checked_before_any_analysis(monkeypatch, tmp_path):
    import avtag.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "analyse", lambda *a, **k: pytest.fail("analysed before checking the output"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as info:
        main([str(shared_path("data", "videos", "seoul.mp4")), "--json", str(blocker / "out.json")])
    assert info.value.code == 2


def test_a_decode_started_before_the_models_is_used_once(monkeypatch, video_branch):
    import avtag.video.decode as decode
    from avtag.inference.pipeline import start_decoding

    video = shared_path("data", "videos", "seoul.mp4")
    early = start_decoding(video, video_branch.config, None, want_audio=False)
    calls = []
    original = decode.decode_video
    monkeypatch.setattr(decode, "decode_video", lambda *a, **k: calls.append(k) or original(*a, **k))
    result = analyse(video, video_branch=video_branch, decoding=early)
    assert calls == [] and result.mode == "video"  # the early decode was used, not repeated
    other = start_decoding(video, None, None, want_audio=False)  # other settings (fps 3): not used
    analyse(video, video_branch=video_branch, decoding=other)
    other.result()
    assert sorted(c["fps"] for c in calls) == sorted([3.0, video_branch.config.fps])  # its own, and analyse's


def test_a_long_video_streams_in_chunks_with_the_same_result(monkeypatch, tagger, video_branch):
    import avtag.inference.pipeline as pipeline
    import avtag.inference.stream as stream

    video = shared_path("data", "videos", "car-detection.mp4")  # 30 s: 5 windows
    whole = analyse(video, video_branch=video_branch, audio_tagger=tagger)
    monkeypatch.setattr(pipeline, "STREAM_MIN_SECONDS", 10.0)
    monkeypatch.setattr(stream, "CHUNK_WINDOWS", 2)
    chunks = []
    original = stream.StreamedVideo.frames_between
    monkeypatch.setattr(stream.StreamedVideo, "frames_between",
                        lambda self, a, b: chunks.append(len((got := original(self, a, b)).frames)) or got)
    streamed = analyse(video, video_branch=video_branch, audio_tagger=tagger)
    assert len(chunks) == 3 and max(chunks) < len(whole.windows) * 10 * video_branch.config.fps
    assert any("decoded 2 windows at a time" in n for n in streamed.notes)
    np.testing.assert_allclose([w.video_probs for w in streamed.windows], [w.video_probs for w in whole.windows],
                               atol=1e-5)
    assert [k.time for k in streamed.keyframes] == [k.time for k in whole.keyframes]
    assert streamed.mode == whole.mode and streamed.duration == pytest.approx(whole.duration, abs=0.05)
    # its sound track (silent here) was read window by window, not decoded whole
    assert "the video's audio track is silent: video branch alone" in streamed.notes


def test_a_long_videos_sound_track_streams_with_the_same_audio_result(monkeypatch, tagger, video_branch):
    import avtag.inference.pipeline as pipeline
    import avtag.video.decode as decode
    from avtag.video.sound_track import SoundTrackStream

    video = shared_path("data", "videos", "motorcycle.mp4")  # 13.4 s with an audible track: 2 windows
    whole = analyse(video, video_branch=video_branch, audio_tagger=tagger)
    monkeypatch.setattr(pipeline, "STREAM_MIN_SECONDS", 5.0)
    reads = []
    original = SoundTrackStream.window
    monkeypatch.setattr(SoundTrackStream, "window", lambda self, a, s: reads.append(a) or original(self, a, s))
    monkeypatch.setattr(decode, "decode_audio", lambda *a, **k: pytest.fail("the whole track was decoded"))
    streamed = analyse(video, video_branch=video_branch, audio_tagger=tagger)
    assert reads == [w.start for w in whole.windows] and streamed.mode == whole.mode == "audio+video"
    # the same samples as the whole-track decode, so the same audio probabilities
    np.testing.assert_allclose([w.audio_probs for w in streamed.windows], [w.audio_probs for w in whole.windows],
                               atol=1e-6)
    np.testing.assert_allclose(streamed.frame_probs, whole.frame_probs, atol=1e-6)


def test_the_report_spectrogram_of_a_long_file_is_bounded():
    from avtag.inference.pipeline import MAX_SPECTROGRAM_FRAMES, _spectrogram

    noise = (0.05 * np.random.default_rng(4).standard_normal(300 * 20000)).astype(np.float32)  # 5 min at 20 kHz
    spectrogram, hop = _spectrogram(noise, None)
    assert spectrogram.shape[0] <= MAX_SPECTROGRAM_FRAMES and spectrogram.shape[1] == 60
    assert spectrogram.shape[0] * hop == pytest.approx(300.0, rel=0.01)  # still spans the whole file
    short, short_hop = _spectrogram(noise[:10 * 20000], None)
    assert short_hop == pytest.approx(0.005) and short.shape[0] == 2000  # short files keep full resolution


def test_a_long_audio_file_is_read_a_window_at_a_time_with_the_same_result(monkeypatch, tagger, noise_wav):
    import avtag.inference.stream as stream

    whole = analyse(noise_wav, audio_tagger=tagger)  # 25 s, 16 kHz stereo: decoded whole
    monkeypatch.setattr(stream, "AUDIO_STREAM_MIN_SECONDS", 20.0)
    reads = []
    original = stream.AudioStream.window
    monkeypatch.setattr(stream.AudioStream, "window", lambda self, a, s: reads.append(a) or original(self, a, s))
    streamed = analyse(noise_wav, audio_tagger=tagger)
    assert reads == [0.0, 5.0, 10.0, 15.0] and any("one window at a time" in n for n in streamed.notes)
    # each window is resampled on its own: equal up to the resampler's edge effects
    np.testing.assert_allclose([w.audio_probs for w in streamed.windows], [w.audio_probs for w in whole.windows],
                               atol=0.02)
    assert streamed.frame_probs.shape == whole.frame_probs.shape and streamed.duration == whole.duration


def test_a_long_silent_audio_file_is_a_user_error(monkeypatch, tagger, tmp_path):
    import avtag.inference.stream as stream

    monkeypatch.setattr(stream, "AUDIO_STREAM_MIN_SECONDS", 5.0)
    silence = tmp_path / "long_silence.flac"
    sf.write(silence, np.zeros(12 * 16000, np.float32), 16000)
    with pytest.raises(InputFileError, match="silent"):
        analyse(silence, audio_tagger=tagger)
