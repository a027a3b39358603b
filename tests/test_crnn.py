"""CRNN of 004 §3.2: the paper's configuration, shapes at any length, 10 Hz segments,
gradient flow, serialisation, and learning a synthetic weak-label task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from avtag.audio.features import LogMelFrontEnd
from avtag.audio.models import build_model, get
from avtag.audio.models.crnn import CRNN
from avtag.audio.pooling import POOLING_NAMES
from avtag.audio.tagger import AudioTagger
from avtag.data.synthetic import make_tone_features, make_tone_task
from model_checks import assert_round_trip

SMALL = dict(conv_channels=[8, 8, 16, 16], rnn_hidden=16)


def test_default_is_the_papers_configuration():
    model = get("crnn")()
    assert isinstance(model, CRNN) and model.model_args["pooling"] == "max"
    assert model.time_reduction == 20  # 200 Hz -> 10 Hz
    assert model.gru.hidden_size == 100 and model.gru.bidirectional
    assert model.classifier.out_features == 17
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(dropouts) == len(pools) + 1 and all(d.p == 0.2 for d in dropouts)
    assert CRNN.default_frontend == "crnn"
    json.dumps(model.model_args)


@pytest.mark.parametrize(("seconds", "segments"), [(10.0, 100), (7.3, 73), (12.0, 120), (7.33, 74), (0.05, 1)])
def test_output_shapes_for_any_length(seconds, segments):
    """Narrow channels (same pooling geometry as the default) keep this fast."""
    model = build_model("crnn", **SMALL).eval()
    frames = int(round(seconds * 200))
    with torch.no_grad():
        out = model(torch.randn(2, frames, 60))
    assert out.clip_probs.shape == (2, 17)
    assert out.frame_probs.shape == (2, segments, 17)
    assert ((out.clip_probs >= 0) & (out.clip_probs <= 1)).all()
    torch.testing.assert_close(out.clip_probs, out.frame_probs.max(dim=1).values)  # 004 §2.1


def test_segment_rate_is_10_hz_through_the_tagger():
    frontend = LogMelFrontEnd.from_preset("crnn")
    tagger = AudioTagger(build_model("crnn"), frontend)
    out = tagger.predict(np.zeros(44100 * 10, np.float32), 44100)
    assert out.frame_probs.shape == (1, 100, 17)
    assert out.frame_hop == pytest.approx(0.1)


def test_tail_frames_not_divisible_by_20_reach_the_last_segment():
    torch.manual_seed(0)
    model = build_model("crnn", **SMALL).eval()
    features = torch.randn(1, 2010, 60)
    changed = features.clone()
    changed[0, -1] += 5.0
    with torch.no_grad():
        a, b = model(features).frame_probs, model(changed).frame_probs
    assert a.shape[1] == 101
    assert not torch.allclose(a[0, -1], b[0, -1])


@pytest.mark.parametrize("pooling", POOLING_NAMES)
def test_gradients_reach_every_parameter(pooling):
    torch.manual_seed(0)
    model = build_model("crnn", pooling=pooling, num_classes=3, **SMALL)
    out = model(torch.randn(4, 120, 60))
    loss = model.loss(out, torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    if pooling == "attention":
        torch.testing.assert_close(out.attention["time"].sum(1), torch.ones(4, 3))
    else:
        assert out.attention == {}


def test_other_mel_counts_and_bad_input():
    model = build_model("crnn", n_mels=128, **SMALL)
    assert model(torch.randn(1, 400, 128)).frame_probs.shape == (1, 20, 17)
    with pytest.raises(ValueError, match="features"):
        model(torch.randn(1, 400, 60))
    with pytest.raises(ValueError, match="leaves no bins"):
        build_model("crnn", n_mels=16)


def test_serialize_round_trip(tmp_path):
    assert_round_trip(build_model("crnn", pooling="attention", **SMALL), torch.randn(1, 300, 60), tmp_path)


def _train(model, features, targets, epochs, lr=1e-2, batch=32):
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(features), generator=generator).split(batch):
            loss = model.loss(model(features[idx]), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


def test_learns_a_synthetic_weak_label_task_with_max_pooling():
    """Weak labels only: the max-pooled CRNN must find the short bursts (mAP > 0.9)."""
    torch.manual_seed(0)
    shape = dict(num_classes=4, frames=200, n_mels=32, burst_frames=(10, 30))
    x, y = (torch.from_numpy(a) for a in make_tone_features(192, seed=0, **shape))
    x_test, y_test = make_tone_features(128, seed=1, **shape)
    model = build_model("crnn", n_mels=32, num_classes=4, freq_pools=[2, 2, 2, 4], **SMALL)
    _train(model, x, y, epochs=10)
    with torch.no_grad():
        probs = model(torch.from_numpy(x_test)).clip_probs.numpy()
    assert average_precision_score(y_test, probs, average="macro") > 0.9


def test_learns_tone_bursts_from_waveforms_through_the_front_end():
    torch.manual_seed(0)
    frontend = LogMelFrontEnd(sample_rate=8000, n_fft=256, win_length=192, hop_length=40, n_mels=32,
                              clip_seconds=1.0)
    waves, y = make_tone_task(160, num_classes=3, seconds=1.0, sample_rate=8000, seed=0)
    waves_test, y_test = make_tone_task(96, num_classes=3, seconds=1.0, sample_rate=8000, seed=1)
    with torch.no_grad():
        x, x_test = frontend(torch.from_numpy(waves)), frontend(torch.from_numpy(waves_test))
    assert x.shape == (160, 200, 32)
    x, x_test = (x - x.mean()) / x.std(), (x_test - x.mean()) / x.std()
    model = build_model("crnn", n_mels=32, num_classes=3, freq_pools=[2, 2, 2, 4], **SMALL)
    _train(model, x, torch.from_numpy(y), epochs=6)
    with torch.no_grad():
        probs = model(x_test).clip_probs.numpy()
    assert average_precision_score(y_test, probs, average="macro") > 0.9
