"""LogMelFrontEnd: presets and frame counts, prepare(), standardisation, config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avtag.audio.features import PRESETS, LogMelFrontEnd, expected_frames, fit_statistics, mixdown


@pytest.mark.parametrize(
    ("preset", "frames", "mels"),
    [("crnn", 2000, 60), ("mmnet", 896, 128), ("cnn", 1000, 64), ("xu", 240, 64), ("sca", 400, 64)],
)
def test_presets_give_the_papers_shapes_for_10_s(preset, frames, mels):
    frontend = LogMelFrontEnd.from_preset(preset)
    assert frontend.clip_samples == 10 * frontend.sample_rate
    features = frontend(torch.randn(2, frontend.clip_samples) * 0.1)
    assert features.shape == (2, frames, mels) == (2, frontend.clip_frames, frontend.n_mels)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert expected_frames(10.0, preset) == frames


def test_xu_preset_matches_the_authors_front_end():
    """000's DCASE17 front-end is Xu et al.'s: 16 kHz, Hamming 1024, hop 664, magnitude, 64 mel to 8 kHz."""
    frontend = LogMelFrontEnd.from_preset("xu")
    assert (frontend.sample_rate, frontend.n_fft, frontend.hop_length, frontend.n_mels) == (16000, 1024, 664, 64)
    assert (frontend.window, frontend.power, frontend.f_max, frontend.log_offset) == ("hamming", 1.0, 8000.0, 1e-8)
    assert LogMelFrontEnd(**frontend.config).window == "hamming"


def test_mmnet_hop_gives_the_018_s_segments_of_002():
    frontend = LogMelFrontEnd.from_preset("mmnet")
    assert frontend.hop_length == 492
    assert 16 * frontend.hop_seconds == pytest.approx(0.18, abs=0.002)


def test_crnn_preset_matches_004():
    frontend = LogMelFrontEnd.from_preset("crnn")
    assert (frontend.sample_rate, frontend.win_length, frontend.hop_length, frontend.n_fft) == (20000, 480, 100, 1024)
    assert frontend.hop_seconds == pytest.approx(0.005)


@pytest.mark.parametrize("seconds", [0.01, 1.0, 7.3, 12.0])
def test_other_lengths_give_floor_samples_over_hop_frames(seconds):
    frontend = LogMelFrontEnd.from_preset("crnn")
    samples = int(seconds * frontend.sample_rate)
    assert frontend(torch.randn(samples)).shape == (1, samples // 100, 60)


def test_log_mel_values_follow_the_definition():
    """A 1 kHz tone peaks in the mel bin whose centre is nearest 1 kHz; silence is log(offset)."""
    frontend = LogMelFrontEnd.from_preset("crnn")
    t = torch.arange(20000) / 20000
    features = frontend(torch.sin(2 * torch.pi * 1000 * t))
    peak_bin = features[0, 50:150].mean(0).argmax().item()
    centres = torch.linspace(0, 1, 62)[1:-1]  # HTK: equally spaced on the mel scale
    mel = lambda hz: 2595 * np.log10(1 + hz / 700)  # noqa: E731
    expected_bin = int(np.argmin(np.abs(centres.numpy() * mel(10000) - mel(1000))))
    assert abs(peak_bin - expected_bin) <= 1
    silent = frontend(torch.zeros(1, 20000))
    torch.testing.assert_close(silent, torch.full_like(silent, float(np.log(1e-6))))


def test_prepare_handles_layouts_rates_and_lengths():
    frontend = LogMelFrontEnd.from_preset("crnn")
    mono = np.random.default_rng(0).standard_normal(44100 * 3).astype(np.float32)
    stereo_cn = np.stack([mono, -mono])  # (C, N): mixes down to silence
    stereo_nc = np.stack([mono, mono], axis=1)  # (N, C)
    a = frontend.prepare(mono, 44100)
    assert a.shape == (200000,) and a.dtype == torch.float32
    assert torch.count_nonzero(a[60000:]) == 0  # 3 s zero-padded at the end to 10 s
    assert frontend.prepare(stereo_cn, 44100).abs().max() < 1e-6
    torch.testing.assert_close(frontend.prepare(stereo_nc, 44100), a)
    long = torch.arange(250000, dtype=torch.float32)
    torch.testing.assert_close(frontend.prepare(long, 20000), long[:200000])  # cropped from the start


def test_mixdown_rejects_ambiguous_shapes():
    with pytest.raises(ValueError):
        mixdown(torch.zeros(100, 200))
    with pytest.raises(ValueError):
        mixdown(torch.zeros(2, 3, 4))


def test_config_round_trip_and_device():
    frontend = LogMelFrontEnd.from_preset("mmnet", clip_seconds=5.0)
    config = json.loads(json.dumps(frontend.config))
    rebuilt = LogMelFrontEnd(**config)
    assert rebuilt.config == frontend.config
    wave = torch.randn(1, 44100)
    torch.testing.assert_close(rebuilt(wave), frontend(wave))
    assert frontend(wave.double()).device == frontend.feature_mean.device


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown front-end preset"):
        LogMelFrontEnd.from_preset("vggish")
    assert set(PRESETS) == {"crnn", "mmnet", "cnn", "xu", "sca"}


def test_fit_statistics_standardises_training_features_and_travels_in_state_dict():
    frontend = LogMelFrontEnd.from_preset("crnn", clip_seconds=1.0)
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(20000).astype(np.float32) * scale for scale in (0.01, 0.1, 1.0)]
    fit_statistics(frontend, clips)
    assert frontend.config["standardize"] is True
    features = torch.cat([frontend(torch.from_numpy(c)) for c in clips], dim=1)[0]
    torch.testing.assert_close(features.mean(0), torch.zeros(60), atol=1e-4, rtol=0)
    torch.testing.assert_close(features.std(0, unbiased=False), torch.ones(60), atol=1e-3, rtol=0)
    rebuilt = LogMelFrontEnd(**frontend.config)
    rebuilt.load_state_dict(frontend.state_dict())
    torch.testing.assert_close(rebuilt(torch.from_numpy(clips[0])), frontend(torch.from_numpy(clips[0])))


def test_fit_statistics_resamples_with_sample_rate_and_rejects_nothing():
    frontend = LogMelFrontEnd.from_preset("cnn", clip_seconds=0.5)
    fit_statistics(frontend, [np.ones((2, 8000), np.float32) * 0.1], sample_rate=16000)
    assert frontend.standardize
    with pytest.raises(ValueError, match="at least one"):
        fit_statistics(LogMelFrontEnd.from_preset("cnn"), [])


def test_autocast_keeps_float32_features():
    frontend = LogMelFrontEnd.from_preset("crnn", clip_seconds=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = frontend(torch.randn(1, 20000))
    assert features.dtype == torch.float32
