"""The README's library examples, run verbatim.

``SNIPPETS`` holds the exact code shown in the README (sections "Library: avtag.audio",
"avtag.video", "avtag.fusion", "avtag.run"). Each is written to a file and run with
``runpy`` in a folder holding the files it names: ``crnn_export/`` (an untrained CRNN export),
``street.wav``, ``street.mp4`` (a real clip from ../shared) and ``validation_outputs.npz`` /
``test_outputs.npz`` (made-up branch outputs).
"""

from __future__ import annotations

import runpy

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import shared_path
from tests.test_run import export_tiny_crnn

SNIPPETS = {
    "audio": '''\
from avtag.audio.io import load_audio
from avtag.audio.tagger import AudioTagger

tagger = AudioTagger.from_pretrained("crnn_export")  # export dir, Lightning .ckpt or .pt
waveform, sample_rate = load_audio("street.wav")      # wav/flac/mp3, or a video's sound track
out = tagger.predict(waveform, sample_rate)           # padded/cropped to the 10 s clip length
print(out.clip_probs.shape, out.frame_probs.shape, out.frame_hop)  # (1, 17) (1, 100, 17) 0.1
for name, prob, on in zip(tagger.classes, out.clip_probs[0].tolist(), tagger.decide(out.clip_probs)[0]):
    print(f"{name:32s} {prob:.3f} {'detected' if on else ''}")
''',
    "video": '''\
from avtag.video.branch import VideoBranch, VideoBranchConfig

branch = VideoBranch(VideoBranchConfig(fps=3.0))  # embedded EfficientNet-Lite0 + GloVe: offline
prediction = branch.predict("street.mp4")          # DS3 key frames -> objects -> 17 events
print(prediction.top_events(3))                    # [(event, probability), ...]
for time, objects in zip(prediction.keyframe_times, prediction.keyframe_objects):
    print(f"key frame at {time:.1f} s:", ", ".join(f"{name} {p:.2f}" for name, p in objects[:3]))
''',
    "fusion": '''\
import numpy as np
from avtag.fusion import FusionModel, fit_fusion

val = np.load("validation_outputs.npz")  # "audio", "video": (clips, 17) probabilities; "labels": 0/1
fusion = fit_fusion(val["audio"], val["video"], val["labels"], split="validation",
                    clip_ids=val["ids"].tolist(), method="search")  # or method="rule" (0.8/0.2)
print(fusion.validation["micro_f1"])     # audio, video and fused micro-F1 on validation
fusion.save("fusion.json")

fusion = FusionModel.load("fusion.json")
test = np.load("test_outputs.npz")
fusion.check_reportable("test", test["ids"].tolist())  # refuses the split it was tuned on
fused = fusion.fuse(test["audio"], test["video"])      # w_c * audio_c + (1 - w_c) * video_c
decisions = fusion.decide(test["audio"], test["video"])
print(fused.shape, decisions.sum(axis=0))
''',
    "run": '''\
from avtag.run import analyse, format_table, load_audio_tagger
from avtag.report import write_report

result = analyse("street.mp4", audio_tagger=load_audio_tagger("crnn_export"),
                 with_spectrogram=True, keep_images=True)
print(format_table(result))       # the table `python -m avtag.run` prints
print(result.detected_events, result.time_ranges)
write_report(result, "street.html")  # or "street.png"
''',
}


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
    assert (workdir / "street.html").read_text().startswith("<!DOCTYPE html>")
