"""Multiple-instance-learning (MIL) pooling: frame probabilities -> clip probabilities.

All functions take frame-level probabilities ``p`` of shape (batch, frames, classes)
and pool over time (``dim=1``), giving (batch, classes):

- ``max``:         max_t p_t                            (004 §2.1, the CRNN baseline)
- ``average``:     (1/T) sum_t p_t
- ``linear_softmax``:       sum_t p_t^2 / sum_t p_t     (each frame weighted by itself)
- ``exp_softmax``: sum_t p_t e^{p_t} / sum_t e^{p_t}    (frames weighted by e^p)
- ``attention``:   class-aware attention (000 §3.2, eqs. 1-3):
  s_t = sigmoid(W h_t + b) (eq. 1), alpha_{t,c} = s_{t,c} / sum_t s_{t,c} (eq. 2),
  y_c = sum_t alpha_{t,c} p_{t,c} (eq. 3), where h_t is the frame embedding.

The five are those compared by Wang et al. (cited as [31] in 000). Every pooling is
also an ``nn.Module`` with the same call, ``pool(frame_probs, embeddings=None) ->
(clip_probs, weights)``, where ``weights`` is the (batch, frames, classes) attention
for attention pooling and ``None`` otherwise, so models can switch pooling by name
(:func:`get_pooling`).

Choices where the paper is silent:
- Denominators of linear softmax and attention are floored at 1e-7 so an all-zero bag
  (or fully underflowed sigmoid) pools to 0 instead of NaN.
- Pooling runs in float32 even under mixed precision.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPS = 1e-7
POOLING_NAMES = ("max", "average", "linear_softmax", "exp_softmax", "attention")


def max_pooling(frame_probs: Tensor) -> Tensor:
    """max over time (004 §2.1); only the arg-max frame receives a gradient."""
    return frame_probs.max(dim=1).values


def average_pooling(frame_probs: Tensor) -> Tensor:
    """Mean over time: every frame gets the same share of the gradient."""
    return frame_probs.mean(dim=1)


def linear_softmax_pooling(frame_probs: Tensor) -> Tensor:
    """sum_t p_t^2 / sum_t p_t."""
    return frame_probs.square().sum(dim=1) / frame_probs.sum(dim=1).clamp_min(EPS)


def exp_softmax_pooling(frame_probs: Tensor) -> Tensor:
    """sum_t p_t exp(p_t) / sum_t exp(p_t) (a softmax over time of p as weights)."""
    return (frame_probs * torch.softmax(frame_probs, dim=1)).sum(dim=1)


def attention_pooling(frame_probs: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """000 eqs. 2-3 from importance scores ``s`` in (0, 1) (eq. 1's output).

    Returns ``(clip_probs, alpha)`` with ``alpha`` summing to 1 over time per class.
    """
    alpha = scores / scores.sum(dim=1, keepdim=True).clamp_min(EPS)
    return (alpha * frame_probs).sum(dim=1), alpha


class MILPooling(nn.Module):
    """A parameter-free pooling function wrapped as a module."""

    requires_embeddings = False

    def __init__(self, name: str) -> None:
        super().__init__()
        functions = {
            "max": max_pooling,
            "average": average_pooling,
            "linear_softmax": linear_softmax_pooling,
            "exp_softmax": exp_softmax_pooling,
        }
        if name not in functions:
            raise ValueError(f"unknown pooling {name!r}; choose from {', '.join(POOLING_NAMES)}")
        self.name = name
        self._function = functions[name]

    def forward(self, frame_probs: Tensor, embeddings: Tensor | None = None) -> tuple[Tensor, None]:
        return self._function(frame_probs.float()), None

    def extra_repr(self) -> str:
        return self.name


class ClassAwareAttentionPooling(nn.Module):
    """Class-aware attention pooling, 000 §3.2 eqs. 1-3.

    ``forward(frame_probs (B, T, C), embeddings (B, T, in_features))`` ->
    ``(clip_probs (B, C), alpha (B, T, C))``.
    """

    requires_embeddings = True
    name = "attention"

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.attention = nn.Linear(in_features, num_classes)  # W_att, b_att of eq. 1

    def scores(self, embeddings: Tensor) -> Tensor:
        """Eq. 1: s_t = sigmoid(W_att h_t + b_att), shape (B, T, C)."""
        return torch.sigmoid(self.attention(embeddings).float())

    def forward(self, frame_probs: Tensor, embeddings: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if embeddings is None:
            raise ValueError("attention pooling needs the frame embeddings")
        if embeddings.shape[:2] != frame_probs.shape[:2]:
            raise ValueError(f"embeddings {tuple(embeddings.shape)} and frame probabilities "
                             f"{tuple(frame_probs.shape)} disagree on (batch, frames)")
        return attention_pooling(frame_probs.float(), self.scores(embeddings))


def get_pooling(name: str, in_features: int | None = None, num_classes: int | None = None) -> nn.Module:
    """Pooling module by name (one of :data:`POOLING_NAMES`).

    ``attention`` needs ``in_features`` (embedding size) and ``num_classes``.
    """
    if name == "attention":
        if in_features is None or num_classes is None:
            raise ValueError("attention pooling needs in_features and num_classes")
        return ClassAwareAttentionPooling(in_features, num_classes)
    return MILPooling(name)


__all__ = [
    "POOLING_NAMES",
    "ClassAwareAttentionPooling",
    "MILPooling",
    "attention_pooling",
    "average_pooling",
    "exp_softmax_pooling",
    "get_pooling",
    "linear_softmax_pooling",
    "max_pooling",
]
