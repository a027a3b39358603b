"""MIL pooling functions (004 §2.1; 000 eqs. 1-3) checked by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from avtag.audio.pooling import (
    POOLING_NAMES,
    ClassAwareAttentionPooling,
    attention_pooling,
    average_pooling,
    exp_softmax_pooling,
    get_pooling,
    linear_softmax_pooling,
    max_pooling,
)

# one clip, three frames, two classes
P = torch.tensor([[[0.1, 0.5], [0.6, 0.5], [0.2, 0.0]]])


def test_max_and_average_by_hand():
    torch.testing.assert_close(max_pooling(P), torch.tensor([[0.6, 0.5]]))
    torch.testing.assert_close(average_pooling(P), torch.tensor([[0.3, 1.0 / 3.0]]))


def test_linear_softmax_by_hand():
    expected0 = (0.01 + 0.36 + 0.04) / (0.1 + 0.6 + 0.2)
    expected1 = (0.25 + 0.25 + 0.0) / (0.5 + 0.5 + 0.0)
    torch.testing.assert_close(linear_softmax_pooling(P), torch.tensor([[expected0, expected1]]))
    assert linear_softmax_pooling(torch.zeros(1, 4, 1)).item() == 0.0  # no NaN for an all-zero bag


def test_exp_softmax_by_hand():
    column = [0.1, 0.6, 0.2]
    expected0 = sum(p * math.exp(p) for p in column) / sum(math.exp(p) for p in column)
    expected1 = (0.5 * math.e**0.5 * 2) / (2 * math.e**0.5 + 1.0)
    torch.testing.assert_close(exp_softmax_pooling(P), torch.tensor([[expected0, expected1]]))


def test_max_pooling_gradient_reaches_only_the_argmax_frame():
    probs = P.clone().requires_grad_(True)
    max_pooling(probs).sum().backward()
    expected = torch.zeros_like(P)
    expected[0, 1, 0] = 1.0  # class 0: frame 1 is the maximum
    assert probs.grad[0, :, 0].tolist() == expected[0, :, 0].tolist()
    assert probs.grad[0, :, 1].sum() == 1.0 and torch.count_nonzero(probs.grad[0, :, 1]) == 1  # a tie: one frame


def test_average_pooling_spreads_gradient_evenly():
    probs = P.clone().requires_grad_(True)
    average_pooling(probs).sum().backward()
    torch.testing.assert_close(probs.grad, torch.full_like(P, 1 / 3))


def test_attention_pooling_eq_2_and_3_by_hand():
    scores = torch.tensor([[[0.5, 0.2], [0.25, 0.2], [0.25, 0.6]]])
    clip, alpha = attention_pooling(P, scores)
    torch.testing.assert_close(alpha[0, :, 0], torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(alpha[0, :, 1], torch.tensor([0.2, 0.2, 0.6]))
    expected = torch.tensor([[0.5 * 0.1 + 0.25 * 0.6 + 0.25 * 0.2, 0.2 * 0.5 + 0.2 * 0.5 + 0.0]])
    torch.testing.assert_close(clip, expected)


def test_class_aware_attention_module_eq_1():
    torch.manual_seed(0)
    pool = ClassAwareAttentionPooling(in_features=5, num_classes=2)
    embeddings = torch.randn(3, 7, 5)
    probs = torch.rand(3, 7, 2)
    clip, alpha = pool(probs, embeddings)
    assert clip.shape == (3, 2) and alpha.shape == (3, 7, 2)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(3, 2))  # eq. 2: sums to one over time
    scores = torch.sigmoid(embeddings @ pool.attention.weight.T + pool.attention.bias)  # eq. 1
    torch.testing.assert_close(alpha, scores / scores.sum(dim=1, keepdim=True))
    torch.testing.assert_close(clip, (alpha * probs).sum(dim=1))  # eq. 3
    assert ((clip >= probs.min(1).values - 1e-6) & (clip <= probs.max(1).values + 1e-6)).all()


def test_attention_needs_embeddings_and_sizes():
    pool = get_pooling("attention", in_features=4, num_classes=2)
    with pytest.raises(ValueError, match="embeddings"):
        pool(torch.rand(1, 3, 2))
    with pytest.raises(ValueError, match="disagree"):
        pool(torch.rand(1, 3, 2), torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="in_features"):
        get_pooling("attention")


@pytest.mark.parametrize("name", POOLING_NAMES)
def test_factory_gives_modules_with_one_call_signature(name):
    pool = get_pooling(name, in_features=4, num_classes=2)
    probs = torch.rand(2, 6, 2)
    clip, weights = pool(probs, torch.randn(2, 6, 4))
    assert clip.shape == (2, 2)
    assert ((clip >= 0) & (clip <= 1)).all()
    assert (weights is not None) == (name == "attention")


def test_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling"):
        get_pooling("median")
