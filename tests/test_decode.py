"""Decoding outcomes: real clips from ../shared (skipped without it) and small synthetic videos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avtag.errors import InputFileError, VideoDecodeError
from avtag.video.decode import decode_video, probe, resized_shape

from conftest import shared_path


def video(name: str) -> Path:
    return shared_path("data", "videos", name)


def write_video(path: Path, frames: list[np.ndarray], codec: str = "ffv1", pix_fmt: str = "yuv420p",
                fmt: str = "rgb24", pts_ms: list[int] | None = None, rate: int = 10) -> Path:
    """A small video written with PyAV (frames as RGB or gray uint8 arrays)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format=fmt)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    samples = (0.3 * np.sin(np.arange(int(seconds * rate)) * 0.1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------- real clips


def test_no_audio_stream_still_decodes_video():
    clip = decode_video(video("seoul.mp4"))
    assert clip.frames.shape == (150, 360, 640, 3) and clip.frames.dtype == np.uint8
    assert not clip.has_audio_stream and clip.audio is None and clip.sample_rate is None
    assert "no audio stream" in clip.notes
    assert any("resized from 960x540" in note for note in clip.notes)
    assert clip.fps == pytest.approx(25.0) and clip.duration == pytest.approx(6.0, abs=0.05)
    assert np.allclose(np.diff(clip.times), 0.04, atol=1e-3)


def test_silent_audio_track_is_reported():
    clip = decode_video(video("car-detection.mp4"), num_frames=8)
    assert clip.has_audio_stream and clip.audio is not None and clip.audio_is_silent
    assert clip.sample_rate == 48000 and "audio track is silent" in clip.notes
    assert clip.audio.shape[0] == pytest.approx(30.16 * 48000, rel=0.01)
    assert clip.frames.shape[0] == 8 and np.all(np.diff(clip.times) > 3.0)


def test_opus_audio_in_matroska():
    clip = decode_video(video("flipping_a_pancake.mkv"), fps=4, audio_sample_rate=16000)
    assert clip.frames.shape[1:] == (240, 426, 3)
    assert clip.frames.shape[0] == pytest.approx(10.33 * 4, abs=1.5)
    assert np.allclose(np.diff(clip.times), 0.25, atol=0.034)
    assert clip.sample_rate == 16000 and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert clip.audio.shape[0] == pytest.approx(10.38 * 16000, rel=0.02)
    assert not clip.audio_is_silent and 0.05 < np.abs(clip.audio).max() <= 1.0
    assert clip.notes == []


def test_probe_reads_header_only():
    info = probe(video("motorcycle.mp4"))
    assert info.has_video and info.has_audio and (info.width, info.height) == (640, 360)
    assert info.fps == pytest.approx(24000 / 1001) and info.num_frames == 321
    assert probe(video("seoul.mp4")).has_audio is False


def test_truncated_copy_decodes_what_is_there(tmp_path):
    source = video("v_ZNVhz7ctTq0.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source[: len(source) // 3])
    clip = decode_video(cut, with_audio=False)
    assert 0 < clip.num_frames < 420
    assert any("truncated" in note for note in clip.notes)


def test_truncated_copy_without_index_is_one_line_error(tmp_path):
    source = video("chaplin.mp4").read_bytes()  # its index (moov) sits at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source[: len(source) // 2])
    with pytest.raises(VideoDecodeError) as err:
        decode_video(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- synthetic


def test_grayscale_odd_size_becomes_rgb(tmp_path):
    levels = [0, 40, 80, 120, 160, 200]
    frames = [np.full((61, 97), v, np.uint8) for v in levels]
    path = write_video(tmp_path / "gray.mkv", frames, pix_fmt="gray", fmt="gray")
    clip = decode_video(path)
    assert clip.frames.shape == (6, 61, 97, 3)
    assert np.array_equal(clip.frames[..., 0], clip.frames[..., 2])
    assert np.allclose(clip.frames[:, 30, 48, 0], levels, atol=2)  # lossless codec
    assert not clip.has_audio_stream and clip.times.tolist() == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


def test_variable_frame_rate_uses_real_timestamps(tmp_path):
    pts = [0, 100, 150, 400, 450, 500, 900, 1000]
    frames = [np.full((32, 48, 3), 30 * i, np.uint8) for i in range(len(pts))]
    path = write_video(tmp_path / "vfr.mkv", frames, pts_ms=pts)
    clip = decode_video(path)
    assert clip.times == pytest.approx(np.array(pts) / 1000, abs=1e-3)
    assert any("variable frame rate" in note for note in clip.notes)
    # sampling at 2 fps takes the frame on screen at 0.0, 0.5 and 1.0 s
    sampled = decode_video(path, fps=2)
    assert sampled.times == pytest.approx([0.0, 0.5, 1.0], abs=1e-3)
    assert sampled.frame_indices.tolist() == [0, 5, 7]


def test_large_frames_are_resized_on_decode(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (720, 1280, 3), np.uint8) for i in range(2)]
    path = write_video(tmp_path / "big.mkv", frames)
    assert decode_video(path, max_side=320).frames.shape == (2, 180, 320, 3)
    assert decode_video(path, max_side=None).frames.shape == (2, 720, 1280, 3)
    assert resized_shape(1280, 720, 640) == (640, 360) and resized_shape(97, 61, 640) == (97, 61)


def test_audio_only_file_says_no_video_stream(tmp_path):
    path = write_audio_only(tmp_path / "speech.wav")
    assert probe(path).has_video is False
    with pytest.raises(VideoDecodeError, match="no video stream") as err:
        decode_video(path)
    assert str(path) in str(err.value)


def test_video_stream_without_frames(tmp_path):
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in audio.encode(frame):
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="frames") as err:
        decode_video(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 10])
def test_non_media_files(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError) as err:
        decode_video(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        decode_video(tmp_path / "absent.mp4")
    with pytest.raises(ValueError):
        decode_video(tmp_path / "absent.mp4", fps=2, num_frames=4)
    with pytest.raises(ValueError):
        decode_video(tmp_path / "absent.mp4", fps=0)


def test_file_errors_say_what_is_wrong_and_name_one_file(tmp_path):
    """10.11: symbolic-link loops and newline paths in the video reader's one-line errors."""
    from avtag.errors import VideoDecodeError

    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    with pytest.raises(VideoDecodeError, match="symbolic link loop"):
        probe(loop)
    odd = tmp_path / "clip\nname.mp4"
    odd.write_bytes(b"\x00" * 256)
    with pytest.raises(VideoDecodeError, match="not a readable media file") as err:
        decode_video(odd)
    assert "\n" not in str(err.value) and repr(str(odd)) in str(err.value)
