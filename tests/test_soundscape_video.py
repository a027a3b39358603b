"""Soundscapes as video files (``--video-dir``) and the event file (``--video-events``): the
picture is cut from the named real video at the recorded start, the sound track is the
soundscape, train gets no video, the audio does not change, and the event file round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from avtag.data.manifests import read_manifest
from avtag.data.soundscapes import make_soundscapes
from conftest import shared_path

SR = 8000
# few recordings to decode: two classes, one background
SMALL = dict(classes=["car_horn", "siren"], background_classes=["rain"], sample_rate=SR, seconds=4.0)


@pytest.fixture(scope="module")
def with_video(tmp_path_factory):
    esc50, shared_videos = shared_path("data", "esc50"), shared_path("data", "videos")
    out = tmp_path_factory.mktemp("soundscape_video")
    videos = out.parent / (out.name + "_videos")  # two short real videos keep the decoding quick
    videos.mkdir()
    for name in ("chaplin.mp4", "flipping_a_pancake.mkv"):
        (videos / name).symlink_to(shared_videos / name)
    result = make_soundscapes(esc50, out, n_train=2, n_test=2, n_validation=2, seed=3, video_dir=videos, **SMALL)
    return esc50, videos, result


def test_validation_and_test_are_videos_and_train_is_not(with_video):
    from avtag.data.soundscape_video import VIDEO_FPS
    from avtag.video.decode import probe

    _, videos, result = with_video
    assert all(r.video is None for r in read_manifest(result.manifests["train"]))
    for split in ("validation", "test"):
        for record in read_manifest(result.manifests[split]):
            assert record.video == f"video/{split}/{record.id}.mp4"
            info = probe(result.out_dir / record.video)
            assert info.has_video and info.has_audio and info.width <= 320 and info.height <= 320
            assert info.fps == pytest.approx(VIDEO_FPS) and info.duration == pytest.approx(4.0, abs=0.05)
            assert (videos / record.extra["picture_source"]).is_file()


def test_the_sound_track_is_the_soundscape(with_video):
    from avtag.data.soundscape_video import VIDEO_FPS
    from avtag.video.decode import decode_video

    _, _, result = with_video
    record = read_manifest(result.manifests["test"])[0]
    wav, rate = sf.read(result.out_dir / record.audio, dtype="float32")
    decoded = decode_video(result.out_dir / record.video, fps=3, with_audio=True, audio_sample_rate=SR)
    assert rate == SR and decoded.audio is not None and len(decoded.frames) == round(4 * VIDEO_FPS)  # each frame once
    track = decoded.audio[:len(wav)]
    assert len(track) == len(wav)
    error = np.sqrt(np.mean((track - wav) ** 2)) / np.sqrt(np.mean(wav**2))
    assert error < 0.2, error  # AAC is lossy; another signal would be off by ~1.4


def test_the_picture_is_cut_from_the_recorded_source_at_the_recorded_start(with_video):
    from avtag.data.soundscape_video import VIDEO_FPS, VIDEO_MAX_SIDE
    from avtag.video.decode import decode_video

    _, videos, result = with_video
    record = read_manifest(result.manifests["validation"])[1]
    clip = decode_video(result.out_dir / record.video, max_side=None, with_audio=False).frames
    source = decode_video(videos / record.extra["picture_source"], fps=VIDEO_FPS, max_side=VIDEO_MAX_SIDE,
                          with_audio=False).frames
    first = int(round(record.extra["picture_start"] * VIDEO_FPS))
    expected = source[(first + np.arange(len(clip))) % len(source), :clip.shape[1], :clip.shape[2]]
    same = np.abs(clip.astype(np.int16) - expected.astype(np.int16)).mean()
    shifted = np.abs(clip.astype(np.int16) - np.roll(expected, 1, axis=1).astype(np.int16)[::-1]).mean()
    assert same < 8.0 and same < shifted / 2, (same, shifted)


def test_pictures_are_deterministic_and_leave_the_audio_alone(with_video, tmp_path):
    esc50, videos, result = with_video
    plain = make_soundscapes(esc50, tmp_path / "plain", n_train=2, n_test=2, n_validation=2, seed=3, **SMALL)
    again = make_soundscapes(esc50, tmp_path / "again", n_train=2, n_test=2, n_validation=2, seed=3,
                             video_dir=videos, **SMALL)
    for split in ("validation", "test"):
        with_pictures = read_manifest(result.manifests[split])
        assert [r.to_json() for r in read_manifest(again.manifests[split])] == [r.to_json() for r in with_pictures]
        for record, bare in zip(with_pictures, read_manifest(plain.manifests[split]), strict=True):
            assert bare.video is None and bare.labels == record.labels and bare.events == record.events
            assert (plain.out_dir / bare.audio).read_bytes() == (result.out_dir / record.audio).read_bytes()


def test_the_event_file_names_the_classes_in_plain_words(with_video, tmp_path):
    from avtag.events import dcase17_events, read_event_file

    esc50, _, result = with_video
    events = read_event_file(result.out_dir / "events.csv")
    assert [(e.name, e.description) for e in events] == [("car_horn", "car horn"), ("siren", "siren")]
    dcase = make_soundscapes(esc50, tmp_path, n_train=1, n_test=1, seed=0, labels="dcase", classes=["car_horn"],
                             background_classes=["rain"], sample_rate=SR, seconds=2.0)
    car = next(e for e in dcase17_events() if e.name == "Car")
    named = [(e.name, e.description) for e in read_event_file(dcase.out_dir / "events.csv")]
    assert named == [("Car", car.description)]


def test_an_event_file_row_without_description_is_described_by_its_name(tmp_path):
    from avtag.events import read_event_file

    path = tmp_path / "events.csv"
    path.write_text("name,description\ncrackling_fire,\nCar,a car on the road\n")
    events = read_event_file(path)
    assert [(e.name, e.description, e.source) for e in events] == [
        ("crackling_fire", "crackling fire", "name"), ("Car", "a car on the road", "user")]


def test_a_video_dir_without_videos_is_one_line(tmp_path, capsys):
    from avtag.cli import main

    esc50 = shared_path("data", "esc50")
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "nowhere", tmp_path / "empty"):
        with pytest.raises(SystemExit) as stop:
            main(["prepare", "soundscapes", "--events-dir", str(esc50), "--out", str(tmp_path / "o"), "--n-train", "1",
                  "--n-test", "1", "--n-validation", "0", "--video-dir", str(folder), "--sample-rate", "8000"])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and str(folder) in err[0]


def test_eval_batch_fusion_fit_and_fused_test_on_the_models_own_classes(with_video, tmp_path, capsys):
    """The audio-visual path on a non-DCASE class list: the video branch maps to the classes of
    events.csv (--video-events), fusion is tuned on validation and applied to test, and every
    output names the model's classes."""
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger
    from avtag.cli import main
    from avtag.validate import read_json

    _, _, result = with_video
    classes = ["car_horn", "siren"]
    torch.manual_seed(0)
    export = AudioTagger(build_model("crnn", num_classes=2, conv_channels=(4, 4, 4, 4), rnn_hidden=4),
                         LogMelFrontEnd.from_preset("crnn"), classes=classes,
                         thresholds=[0.5, 0.5]).export(tmp_path / "export")
    common = ["--audio-checkpoint", str(export), "--video-events", str(result.out_dir / "events.csv"), "--workers", "0",
              "--quiet", "--device", "cpu"]
    assert main(["eval-batch", "--manifest", str(result.manifests["validation"]), "--out", str(tmp_path / "val"),
                 *common]) == 0
    info = read_json(tmp_path / "val" / "run_info.json", "run info")
    assert info["classes"] == {"audio": classes, "video": classes, "fused": classes}
    assert info["models"]["video"]["events"] == [["car_horn", "car horn"], ["siren", "siren"]]
    assert main(["fusion", "fit", "--eval-dir", str(tmp_path / "val"), "--out", str(tmp_path / "fusion.json")]) == 0
    fusion = read_json(tmp_path / "fusion.json", "fusion file")
    assert fusion["classes"] == classes and fusion["tuned_on"]["split"] == "validation"
    assert main(["eval-batch", "--manifest", str(result.manifests["test"]), "--out", str(tmp_path / "test"),
                 "--fusion", str(tmp_path / "fusion.json"), *common]) == 0
    metrics = read_json(tmp_path / "test" / "metrics.json", "metrics")
    assert set(metrics["systems"]) == {"audio", "video", "fused"}
    assert list(metrics["systems"]["fused"]["class_wise"]) == classes
    header = (tmp_path / "test" / "probabilities_fused.csv").read_text().splitlines()[0]
    assert header == "id,car_horn,siren"
    clip = result.out_dir / read_manifest(result.manifests["test"])[0].video
    assert main(["run", "--video", str(clip), *common[:4], "--fusion", str(tmp_path / "fusion.json"), "--json",
                 str(tmp_path / "run.json"), "--quiet", "--device", "cpu"]) == 0
    tagged = read_json(tmp_path / "run.json", "run result")
    assert tagged["classes"] == tagged["video_classes"] == classes and tagged["mode"] == "audio+video"
    assert {e["event"] for e in tagged["video_evidence"]} <= set(classes)
    capsys.readouterr()
