"""Reports of an analysis result: a self-contained HTML page (checked in headless Chromium
when installed) and a single PNG figure."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avtag.events import event_names
from avtag.inference.results import AnalysisResult, EvidenceObject, KeyFrame, VideoEvidence, WindowTags
from avtag.report import render_html, write_png, write_report

CHROMIUM = Path("/usr/bin/chromium")


def fake_result(with_video: bool = True, with_audio: bool = True, with_sound: bool | None = None) -> AnalysisResult:
    """A made-up 20 s result: 'Car' and 'Bus' detected, three windows."""
    rng = np.random.default_rng(0)
    classes = event_names()
    n = len(classes)
    car, bus = classes.index("Car"), classes.index("Bus")
    frame_hop, duration = 0.1, 20.0
    frame_probs = rng.uniform(0.0, 0.2, (200, n))
    frame_probs[30:80, car] = 0.9
    frame_probs[120:125, bus] = 0.7
    audio = frame_probs.max(axis=0) if with_audio else None
    video = rng.uniform(0.0, 0.3, n) if with_video else None
    if video is not None:
        video[bus] = 0.8
    fused = audio if video is None else (video if audio is None else 0.8 * audio + 0.2 * video)
    thresholds = np.full(n, 0.5)
    keyframes = []
    if with_video:
        for i, t in enumerate((1.0, 4.0, 12.0, 17.5)):
            image = np.zeros((90, 160, 3), np.uint8)
            image[:, : 40 * (i + 1)] = (40 * i, 120, 200)
            keyframes.append(KeyFrame(t, i // 2, [("minibus", 0.5), ("cab, hack, taxi, taxicab", 0.3), ("street sign", 0.1)], image))
    with_sound = with_audio if with_sound is None else with_sound
    evidence = [VideoEvidence("Bus", 0.8, 2, [EvidenceObject("minibus", 0.5, 0.7, [12.0])])] if with_video else []
    return AnalysisResult(
        input="street <scene>.mp4", audio_input=None,
        mode="audio+video" if with_audio and with_video else ("audio" if with_audio else "video"),
        duration=duration, classes=classes, audio_probs=audio, video_probs=video, fused_probs=fused,
        thresholds=thresholds, detected=fused >= thresholds, threshold_source="paper-default",
        fusion={"method": "paper-default"}, window_seconds=10.0, window_hop=5.0,
        windows=[WindowTags(s, s + 10.0, 10.0, audio, video, fused, ["Car"]) for s in (0.0, 5.0, 10.0)],
        video_evidence=evidence,
        keyframes=keyframes, frame_hop=frame_hop if with_audio else None,
        frame_probs=frame_probs if with_audio else None, audio_thresholds=thresholds if with_audio else None,
        time_ranges={"Car": [(3.0, 8.0)], "Bus": [(12.0, 12.5)]} if with_audio else {},
        notes=["a note with <markup> & ampersand"],
        spectrogram=rng.normal(size=(2000, 60)) if with_sound else None, spectrogram_hop=0.01,
        waveform=(0.1 * rng.standard_normal(20 * 8000)).astype(np.float32) if with_sound else None,
        sample_rate=8000 if with_sound else None,
    )


@pytest.fixture(scope="module")
def html_report(tmp_path_factory) -> Path:
    return write_report(fake_result(), tmp_path_factory.mktemp("report") / "report.html")


def test_html_is_self_contained(html_report):
    page = html_report.read_text()
    assert not re.search(r"(src|href)=\"(?!data:)", page), "only data: URIs may be referenced"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 + 4  # audio figure, bars figure, four key frames
    for encoded in images:
        assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")
    # the event table lists all 17 events, detected ones marked, text escaped
    assert page.count("<tr") == 1 + 17 + 1 + 3  # event table (header + 17), windows table (header + 3)
    assert page.count('class="detected"') == 2
    assert "street &lt;scene&gt;.mp4" in page and "&lt;markup&gt; &amp; ampersand" in page
    assert "3.0&ndash;8.0" in page  # Car's time range
    # an audio player with the sound track, and the threshold source explained
    player = re.findall(r'<audio controls[^>]* src="data:audio/flac;base64,([^"]+)"', page)
    assert len(player) == 1 and base64.b64decode(player[0]).startswith(b"fLaC")
    assert "not tuned on your data" in page and "004 §3.4" in page


def test_event_rows_are_sorted_by_fused_probability(html_report):
    page = html_report.read_text()
    table = page[page.index('<table class="events">'):]
    table = table[:table.index("</table>")]
    fused = [float(x) for x in re.findall(r"<tr[^>]*><td>\d+</td><td>[^<]*</td><td>[^<]*</td><td>[^<]*</td><td>([\d.]+)</td>", table)]
    assert len(fused) == 17 and fused == sorted(fused, reverse=True)
    names = re.findall(r"<tr[^>]*><td>1</td><td>([^<]*)</td>", table)
    assert names == ["Car"]


def test_per_window_probabilities_are_tabled(html_report):
    page = html_report.read_text()
    windows = page[page.index('<table class="windows">'):]
    windows = windows[:windows.index("</table>")]
    assert windows.count("<tr>") == 1 + 3 and "<th>Car</th>" in windows


def test_no_frame_probability_panel_without_an_audio_model():
    # a video with sound but no audio model: a spectrogram, no frame-probability panel
    page = render_html(fake_result(with_audio=False, with_sound=True))
    assert "frame-level probabilities" not in page and "Audio: spectrogram</h2>" in page
    # no sound at all: no audio figure, no player
    page = render_html(fake_result(with_audio=False, with_sound=False))
    assert "Audio:" not in page and "<audio" not in page


def test_png_is_one_figure(tmp_path):
    from PIL import Image

    path = write_png(fake_result(), tmp_path / "r.png")
    with Image.open(path) as image:
        width, height = image.size
    assert width > 800 and height > 800


@pytest.mark.parametrize("video, audio", [(False, True), (True, False)])
def test_single_branch_reports_render(tmp_path, video, audio):
    result = fake_result(with_video=video, with_audio=audio)
    page = render_html(result)
    assert page.count("data:image/png;base64,") == (2 if audio else 1) + (4 if video else 0)
    write_png(result, tmp_path / "r.png")


def test_unknown_report_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.html or \.png"):
        write_report(fake_result(), tmp_path / "r.pdf")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_html_renders_in_headless_chromium(html_report, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}", "--window-size=1200,2400", html_report.as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    keep = Path(__file__).resolve().parents[1] / "outputs" / "report_screenshot.png"
    if keep.parent.is_dir():  # handy for a human look; outputs/ is git-ignored
        shutil.copy(shot, keep)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1100
    # the page really drew its images: the magma spectrogram's dark purples and many colours
    assert pixels.std() > 30
    assert len(np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0)) > 500
