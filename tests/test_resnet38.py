"""PANNs-style ResNet38 (GL-AT's 003 Table 1 backbone): size against PANNs, shapes, the
frame-wise classifier, gradients, learning and the serialize round trip."""

from __future__ import annotations

import pytest
import torch

from avtag.audio.models import available_models, build_model
from avtag.audio.models.resnet38 import ResNet38
from conftest import train_and_score
from model_checks import (
    assert_gradients_reach_every_parameter,
    assert_one_classifier_for_clips_and_frames,
    assert_round_trip,
)

SMALL = dict(num_classes=4, n_mels=16, embedding_dim=32, stage_channels=[8, 8, 16, 16], stage_blocks=[1, 1, 1, 1])


def test_size_matches_panns_at_527_classes():
    assert "resnet38" in available_models()
    model = build_model("resnet38", num_classes=527)
    assert model.num_parameters == pytest.approx(73.7e6, rel=0.002)  # PANNs: ResNet38, 73.7 M
    assert sum(1 for _ in model.resnet) == 16  # (3, 4, 6, 3) basic blocks


def test_ten_second_shapes_and_stride():
    model = build_model("resnet38").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1000, 64))  # 10 s at the "cnn" preset
    assert out.clip_probs.shape == (1, 17)
    assert out.frame_probs.shape == (1, 32, 17)  # ceil(1000 / 32)
    assert out.frame_stride == model.time_stride == 32


@pytest.mark.parametrize("frames, segments", [(160, 5), (33, 2), (5, 1)])
def test_other_lengths(frames, segments):
    model = ResNet38(**SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, frames, 16))
    assert out.frame_probs.shape == (2, segments, 4)


def test_clip_and_frame_outputs_use_the_same_classifier():
    assert_one_classifier_for_clips_and_frames(ResNet38(**SMALL), torch.randn(2, 96, 16))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = ResNet38(**SMALL).train()
    for block in model.resnet:  # zero-initialised last BN would block the first step's conv1 gradients
        torch.nn.init.ones_(block.bn2.weight)
    assert_gradients_reach_every_parameter(model, torch.randn(4, 64, 16), torch.tensor([[1.0, 0, 1, 0]] * 4))


def test_serialize_round_trip(tmp_path):
    restored = assert_round_trip(ResNet38(**SMALL), torch.randn(2, 64, 16), tmp_path)
    assert restored.model_args["stage_channels"] == [8, 8, 16, 16]


def test_learns_the_weak_label_task():
    torch.manual_seed(0)
    model = ResNet38(**SMALL)
    before, after = train_and_score(model, steps=80)
    assert after > 0.85 and after > before + 0.2
