"""avtag.audio.io: decoding, resampling, channel handling and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from avtag.audio.io import audio_info, load_audio
from avtag.errors import AudioDecodeError, AvtagError
from conftest import shared_path

SR = 16000


@pytest.fixture()
def tone(tmp_path):
    t = np.arange(SR) / SR
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 660 * t)
    return tmp_path, np.stack([left, right], axis=1).astype(np.float32)  # (N, 2)


def _assert_one_line(err: AvtagError, path) -> None:
    text = str(err)
    assert "\n" not in text
    assert str(path) in text


def test_mono_mixdown_and_multichannel_layout(tone):
    folder, stereo = tone
    path = folder / "stereo.wav"
    sf.write(path, stereo, SR, subtype="FLOAT")
    mono, sr = load_audio(path)
    assert sr == SR and mono.dtype == np.float32 and mono.shape == (SR,)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1e-6)
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, SR)
    np.testing.assert_allclose(both[1], stereo[:, 1], atol=1e-6)


def test_resampling_keeps_duration_and_pitch(tone):
    folder, stereo = tone
    path = folder / "a.flac"
    sf.write(path, stereo[:, 0], SR)
    samples, sr = load_audio(path, target_sr=20000)
    assert sr == 20000 and samples.shape == (20000,)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * sr / len(samples)
    assert abs(peak_hz - 440) < 2


def test_max_seconds_reads_only_the_start(tone):
    folder, stereo = tone
    path = folder / "a.wav"
    sf.write(path, stereo, SR)
    samples, _ = load_audio(path, max_seconds=0.25)
    assert samples.shape == (SR // 4,)


def test_integer_pcm_is_scaled_to_unit_range(tmp_path):
    path = tmp_path / "pcm16.wav"
    sf.write(path, np.full(100, 16384, dtype=np.int16), SR, subtype="PCM_16")
    samples, _ = load_audio(path)
    np.testing.assert_allclose(samples, 0.5)


def test_silence_is_not_an_error(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SR, np.float32), SR)
    samples, _ = load_audio(path)
    assert samples.shape == (SR,) and not samples.any()


def test_audio_info(tone):
    folder, stereo = tone
    path = folder / "s.flac"
    sf.write(path, stereo, SR)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames, info.format) == (SR, 2, SR, "FLAC")
    assert info.duration == pytest.approx(1.0)


def _write_bad(kind: str, folder, good_wav):
    path = folder / f"{kind}.wav"
    if kind == "missing":
        return folder / "nowhere.wav"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_header":
        path.write_bytes(good_wav.read_bytes()[:30])
    elif kind == "truncated_data":
        data = good_wav.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "non_audio":
        path.write_text("id,label\nclip,Siren\n")
    elif kind == "zero_length":
        sf.write(path, np.zeros(0, np.float32), SR)
    return path


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("empty", "empty file"),
        ("truncated_header", "not a decodable"),
        ("truncated_data", "truncated"),
        ("non_audio", "not a decodable"),
        ("zero_length", "no audio samples"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_file(tone, kind, phrase):
    folder, stereo = tone
    good = folder / "good.wav"
    sf.write(good, stereo, SR)
    path = _write_bad(kind, folder, good)
    with pytest.raises(AudioDecodeError, match=phrase) as err:
        load_audio(path)
    _assert_one_line(err.value, path)


def test_truncated_flac_stream_is_an_error(tone):
    folder, stereo = tone
    good = folder / "good.flac"
    sf.write(good, stereo, SR)
    cut = folder / "cut.flac"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AudioDecodeError, match="truncated") as err:
        load_audio(cut)
    _assert_one_line(err.value, cut)


def test_info_errors_too(tmp_path):
    with pytest.raises(AudioDecodeError, match="no such file"):
        audio_info(tmp_path / "missing.flac")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 512)
    with pytest.raises(AudioDecodeError, match="not a decodable"):
        audio_info(junk)


def test_video_audio_tracks_decode_with_pyav():
    videos = shared_path("data", "videos")
    samples, sr = load_audio(videos / "motorcycle.mp4", target_sr=20000, max_seconds=2.0)
    assert sr == 20000 and samples.shape == (40000,) and np.abs(samples).max() > 0.01
    opus, sr = load_audio(videos / "flipping_a_pancake.mkv", max_seconds=1.0)
    assert sr == 48000 and opus.shape == (48000,)
    silent, _ = load_audio(videos / "car-detection.mp4", max_seconds=1.0)
    assert silent.size > 0 and np.abs(silent).max() == 0.0  # a silent track decodes to zeros
    info = audio_info(videos / "chaplin.mp4")
    assert info.sample_rate == 44100 and info.channels == 2 and info.duration > 5


def test_video_without_audio_stream_says_so():
    path = shared_path("data", "videos", "seoul.mp4")
    with pytest.raises(AudioDecodeError, match="has no audio stream") as err:
        load_audio(path)
    _assert_one_line(err.value, path)


# ----------------------------------------------------------------------------- 10.11 messages


def test_unreadable_file_says_permission_denied(tone, monkeypatch):
    import errno
    import os

    folder, stereo = tone
    path = folder / "locked.wav"
    sf.write(path, stereo, SR)
    if os.geteuid() != 0:  # root reads any file: simulate the refusal there
        path.chmod(0)
    else:
        real_open = os.open

        def refusing_open(target, *args, **kwargs):
            if str(target) == str(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(target))
            return real_open(target, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
    for reader in (load_audio, audio_info):
        with pytest.raises(AudioDecodeError, match="permission denied") as err:
            reader(path)
        _assert_one_line(err.value, path)
        assert "System error" not in str(err.value) and "no such file" not in str(err.value)


def test_symlink_loop_and_broken_link_say_so(tmp_path):
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    with pytest.raises(AudioDecodeError, match="symbolic link loop") as err:
        load_audio(loop)
    _assert_one_line(err.value, loop)
    dangling = tmp_path / "dangling.wav"
    dangling.symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioDecodeError, match="broken symbolic link") as err:
        load_audio(dangling)
    assert "gone.wav" in str(err.value)


def test_a_path_with_a_newline_is_shown_unambiguously(tone):
    folder, stereo = tone
    (folder / "a").mkdir()
    path = folder / "a\nb.wav"  # not the file "a b.wav"
    for message in ("no such file", "empty file", "not a decodable"):
        if message == "empty file":
            path.write_bytes(b"")
        elif message == "not a decodable":
            path.write_text("plain text, not audio")
        with pytest.raises(AudioDecodeError, match=message) as err:
            load_audio(path)
        text = str(err.value)
        assert "\n" not in text and repr(str(path)) in text and "a b.wav" not in text


def test_truncated_mp4_audio_is_an_error_like_a_truncated_wav(tmp_path):
    """0.34 s of a 13.4 s track used to come back without a word; a truncated WAV raises."""
    from avtag.video.decode import decode_audio

    whole = shared_path("data", "videos", "motorcycle.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:120_000])  # the index (moov) is first: it still opens
    with pytest.raises(AudioDecodeError, match=r"truncated: the audio stream declares 13.40 s, "
                                               r"only 1.00 s decode") as err:
        load_audio(cut)
    _assert_one_line(err.value, cut)
    head, sr = load_audio(cut, max_seconds=0.5)  # what was asked for is all there
    assert head.shape == (sr // 2,)
    audio, rate, notes = decode_audio(cut)  # the video path keeps going and says so
    assert len(audio) / rate == pytest.approx(1.0, abs=0.01)
    assert any("audio track looks truncated" in note for note in notes)


def test_float_wav_beyond_full_scale_is_normalised_with_a_warning(tmp_path):
    from avtag.audio.io import AudioLevelWarning

    path = tmp_path / "loud.wav"
    ramp = np.linspace(-3e5, 1.5e5, SR).astype(np.float32)
    sf.write(path, ramp, SR, subtype="FLOAT")
    with pytest.warns(AudioLevelWarning, match="peaks at 300000"):
        samples, _ = load_audio(path)
    assert samples.dtype == np.float32 and float(np.abs(samples).max()) == pytest.approx(1.0)
    np.testing.assert_allclose(samples, ramp / 3e5, rtol=1e-6, atol=1e-7)
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, ramp / 3e5 * 0.9, SR, subtype="FLOAT")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within full scale: returned as is, no warning
        same, _ = load_audio(quiet)
    np.testing.assert_allclose(same, ramp / 3e5 * 0.9, rtol=1e-6, atol=1e-7)
