"""Every model's frame hop is its real pooling stride (issue 11, item 9): with ceil
pooling a model of stride s gives ceil(T / s) segments spaced s input frames apart, so
``frame_hop = s * input hop`` (1000 frames pooled by 32: 0.32 s, not 0.3125 s)."""

from __future__ import annotations

import math

import pytest
import torch

from avtag.audio.models import available_models, build_model, segment_hop_seconds

# Models and the mel bins they take; (stride, by reading the architecture) for each.
STRIDES = {
    "crnn": (60, 20),  # time pools 2, 2, 5, 1 (004 §3.2: 200 Hz -> 10 Hz)
    "multilevel": (64, 8),  # Xu's 2, 2, 2, 1
    "sca": (64, 8),  # 2, 2, 2, 1, 1, 1
    "mmnet": (128, 16),  # 4, 4
    "mmnet_ms": (128, 16),
    "cnn10": (64, 16),  # four 2x2 average poolings
    "resnet38": (64, 32),
    "glat": (60, 20),  # the crnn global stream's
}


def test_every_registered_log_mel_model_is_covered():
    assert set(available_models()) - {"seed_ensemble", "multilevel_embeddings"} == set(STRIDES)


@pytest.mark.parametrize("name", sorted(STRIDES))
def test_frame_stride_is_the_pooling_stride(name):
    n_mels, stride = STRIDES[name]
    model = build_model(name).eval()
    assert model.time_stride == stride
    for segments in (3, 4):
        frames = (segments - 1) * stride + 1  # one frame into the last segment
        with torch.no_grad():
            out = model(torch.randn(1, frames, n_mels))
        assert out.frame_probs.shape[1] == math.ceil(frames / stride) == segments
        assert out.frame_stride == stride
        assert segment_hop_seconds(out, 0.01, frames) == pytest.approx(stride * 0.01)


def test_embedding_model_has_one_segment_per_embedding():
    model = build_model("multilevel_embeddings").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 10, 128))
    assert out.frame_stride == model.time_stride == 1
    assert segment_hop_seconds(out, 0.96, 10) == pytest.approx(0.96)


def test_training_module_reports_the_stride_hop():
    from avtag.train import TaggingModule

    module = TaggingModule(model_name="multilevel", model_args={"time_pools": [4, 4, 2, 1]}, frontend="cnn").eval()
    with torch.no_grad():
        out = module(torch.randn(1, 32000 * 10) * 0.1)
    assert out.frame_hop == pytest.approx(0.32)
