"""A long video's sound track read window by window (avtag.video.sound_track): the same samples
and the same remarks as the whole-track decode, in bounded memory (issue 10 item 9)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from avtag.video.decode import decode_audio
from avtag.video.sound_track import SoundTrackStream

from conftest import mux_mono_audio, shared_path

RATE = 16000


def write_av(path: Path, audio: np.ndarray | None, rate: int = 22050, seconds: float = 4.0) -> Path:
    """A Matroska file: 2 frames/s of gray video and, if given, a float32 PCM mono track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=2)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        sound = None
        if audio is not None:
            sound = container.add_stream("pcm_f32le", rate=rate)
            sound.layout = "mono"
        for i in range(int(seconds * 2)):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 10 * i % 250, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            mux_mono_audio(container, sound, audio, rate, packet=4096)
    return path


def tone(seconds: float, rate: int = 22050, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t) * np.linspace(0.2, 1.0, len(t))).astype(np.float32)


def windows_of(track: SoundTrackStream, starts, seconds: float) -> list[np.ndarray]:
    return [track.window(float(s), seconds) for s in starts]


def test_windows_equal_the_whole_track_decode_of_a_real_video():
    path = shared_path("data", "videos", "motorcycle.mp4")  # 13.4 s AAC at 44.1 kHz
    whole, rate, notes = decode_audio(path, 20000)
    track, open_notes = SoundTrackStream.open(path, 20000)
    assert open_notes == [] and track.duration == pytest.approx(len(whole) / rate, abs=0.01)
    starts = [0.0, 2.5, 5.0, 7.5, 10.0]
    for start, piece in zip(starts, windows_of(track, starts, 5.0), strict=True):
        begin = int(round(start * rate))
        np.testing.assert_array_equal(piece, whole[begin:begin + 5 * rate])
    assert track.peak == pytest.approx(float(np.abs(whole).max()))
    assert track._kept <= 5 * rate + 8192  # what it holds: one window and a packet, not the track
    # a window before the kept samples restarts the decode and still gives the same samples
    np.testing.assert_array_equal(track.window(1.0, 2.0), whole[rate:3 * rate])
    assert track.notes == notes == []


def test_memory_is_one_window_whatever_the_length(tmp_path):
    audio = tone(60.0, rate=RATE)
    track, _ = SoundTrackStream.open(write_av(tmp_path / "long.mkv", audio, rate=RATE, seconds=60.0), RATE)
    held = []
    for start in np.arange(0.0, 55.0, 5.0):
        piece = track.window(float(start), 10.0)
        np.testing.assert_array_equal(piece, audio[int(start * RATE):int(start * RATE) + 10 * RATE])
        held.append(track._kept)
    assert max(held) <= 10 * RATE + 4096  # never the 60 s track
    assert len(track.window(55.0, 10.0)) == 5 * RATE  # shorter at the end, as a slice


def test_beyond_full_scale_is_clipped_and_noted(tmp_path):
    audio = tone(3.0, amplitude=0.5)
    audio[40000:40100] = 3.0  # +9.5 dBFS, 1.8 s in: after the first window has been returned
    path = write_av(tmp_path / "loud.mkv", audio)
    whole, rate, notes = decode_audio(path, RATE)  # the whole decode divides by the peak it knows
    assert len(notes) == 1 and notes[0].startswith("audio peaks at 3")
    track, _ = SoundTrackStream.open(path, RATE)
    pieces = np.concatenate(windows_of(track, [0.0, 1.0, 2.0], 1.0))
    unscaled = whole[:3 * RATE] * float(notes[0].split()[3].rstrip(","))
    np.testing.assert_allclose(pieces, np.clip(unscaled, -1.0, 1.0), atol=2e-3)  # (3 significant digits)
    assert track.peak == 1.0 and np.abs(pieces).max() == 1.0
    assert track.notes == [notes[0].replace("divided by its peak", "clipped to [-1, 1]")]


def test_no_audio_stream_and_an_unreadable_file_give_the_whole_decoders_reasons(tmp_path):
    silent_film = write_av(tmp_path / "picture.mkv", None)
    assert SoundTrackStream.open(silent_film, RATE) == (None, ["no audio stream"])
    assert decode_audio(silent_film, RATE)[2] == ["no audio stream"]
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1aE\xdf\xa3" + bytes(300))
    track, notes = SoundTrackStream.open(garbage, RATE)
    assert track is None and len(notes) == 1 and notes[0].startswith("audio track could not be read")


def test_a_truncated_track_is_noted_as_the_whole_decode_notes_it(tmp_path):
    path = write_av(tmp_path / "full.mkv", tone(8.0), seconds=8.0)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.5)])
    whole, rate, notes = decode_audio(cut, RATE)
    track, _ = SoundTrackStream.open(cut, RATE)
    pieces = windows_of(track, np.arange(0.0, 8.0, 2.0), 2.0)
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert track.notes == notes
