"""CNN10 (PANNs-like backbone of GL-AT, 003 §3.1): shapes, classifier on frames, learning."""

from __future__ import annotations

import pytest
import torch

from avtag.audio.models import build_model
from avtag.audio.models.cnn10 import CNN10
from conftest import train_and_score
from model_checks import (
    assert_gradients_reach_every_parameter,
    assert_one_classifier_for_clips_and_frames,
    assert_round_trip,
)


SMALL = dict(num_classes=4, n_mels=16, channels=[8, 16, 32, 32], embedding_dim=32)


def test_default_architecture_and_shapes_for_ten_seconds():
    model = build_model("cnn10").eval()
    assert model.default_frontend == "cnn"
    assert [b.conv1.out_channels for b in model.blocks] == [64, 128, 256, 512]
    assert 4.5e6 < model.num_parameters < 5.5e6  # PANNs CNN10 has ~4.9 M
    with torch.no_grad():
        out = model(torch.randn(2, 1000, 64))  # 10 s at the "cnn" preset
    assert out.clip_probs.shape == (2, 17)
    assert out.frame_probs.shape == (2, 63, 17)  # ceil(1000 / 16)
    assert ((out.clip_probs >= 0) & (out.clip_probs <= 1)).all()


@pytest.mark.parametrize("frames, segments", [(300, 19), (160, 10), (17, 2), (5, 1)])
def test_other_lengths(frames, segments):
    model = CNN10(**SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(3, frames, 16))
    assert out.clip_probs.shape == (3, 4)
    assert out.frame_probs.shape == (3, segments, 4)


def test_clip_and_frame_outputs_use_the_same_classifier():
    assert_one_classifier_for_clips_and_frames(CNN10(**SMALL), torch.randn(2, 200, 16))


def test_no_dropout_before_the_output_layer_as_panns_cnn10():
    """PANNs' Cnn10 drops out before fc1 only; the output layer sees relu(fc1(x)) as is."""
    model = CNN10(**SMALL).train()
    pooled = torch.randn(3, 32)
    torch.manual_seed(0)
    first = model.classify(pooled)
    torch.manual_seed(0)
    mask_input = model.classifier_dropout(pooled)
    torch.testing.assert_close(first, model.fc_classes(torch.relu(model.fc_embedding(mask_input))))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    assert_gradients_reach_every_parameter(CNN10(**SMALL), torch.randn(4, 64, 16), torch.tensor([[1.0, 0, 1, 0]] * 4))


def test_serialize_round_trip(tmp_path):
    restored = assert_round_trip(CNN10(**SMALL), torch.randn(2, 100, 16), tmp_path)
    assert restored.model_args["channels"] == [8, 16, 32, 32]


def test_learns_the_weak_label_task():
    torch.manual_seed(0)
    model = CNN10(num_classes=4, n_mels=16, channels=[8, 16, 16, 32], embedding_dim=32, classifier_dropout=0.1)
    before, after = train_and_score(model)
    assert after > 0.85 and after > before + 0.2
