"""The losses of M&mnet (002 eq. 3, 7, 8, 11), as functions of probabilities and labels.

Class weights, eq. 11: ``w_c = (p_bar / p_c * (1 - p_c) / (1 - p_bar)) ** beta``. As in
the authors' ``mm_loss`` (fearofchou/mmnet ``Trainer.py``), the weights multiply only the
positive term of the cross entropy, ``-(w_c y log p + (1 - y) log(1 - p))``, and ``p_c`` is
class c's share of all training labels. 002 does not say which terms are weighted; weighting
both terms (the literal reading of "per-class loss weights") would leave each class's optimal
constant prediction at its frequency (p = 0.01, w = 1.83: 0.0100), which cannot counter the
imbalance that eq. 11 is there for; positive-only weighting moves it to
w p / (w p + 1 - p) = 0.0181.

Two micro-loss forms:
- :func:`micro_loss` (the paper's): eq. 7, ``sum_t a_t xi(y, d_t)`` with the attention a_t
  (which sums to M over the clip) differentiated.
- :func:`authors_micro_loss`: the authors' ``mm_loss``: each segment's positive terms weighted
  by ``w_c * a_t`` (a_t not differentiated: ``att_sc.data``), negative terms by 1, averaged
  over segments and classes.

Choices where the paper is silent (ours):
- xi is the cross entropy averaged (not summed) over classes; this scales eq. 8 by the
  constant 1/C and leaves the macro/micro balance lambda unchanged. eq. 3 prints y and y_hat
  swapped; the standard cross entropy is meant and used.
- Proportions p_c are clipped to [1e-6, 1 - 1e-6] so a class with no positive example gets a
  finite weight.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avtag.audio.models.base import EPS


def class_loss_weights(targets: Tensor | np.ndarray, beta: float = 0.3) -> list[float]:
    """Per-class loss weights of 002 eq. 11 from a training-set label matrix (N, C).

    w_c = (p_bar / p_c * (1 - p_c) / (1 - p_bar)) ** beta, p_c = class c's share of all
    training labels (the authors' ``class_prior``), p_bar = mean of the p_c. Rare classes
    get weights above 1.
    """
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError("targets must be a non-empty (clips, classes) matrix")
    total = labels.sum()
    if total <= 0:
        raise ValueError("targets hold no positive label")
    proportions = (labels.sum(dim=0) / total).clamp(1e-6, 1 - 1e-6)
    mean_proportion = proportions.mean()
    weights = (mean_proportion / proportions * (1 - proportions) / (1 - mean_proportion)) ** beta
    return weights.tolist()


def weighted_cross_entropy(probs: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """xi(y, p) of 002 eq. 3, per example, averaged over the last (class) axis, with the
    eq. 11 weights on the positive term only: ``-(w y log p + (1 - y) log(1 - p))``.
    ``probs`` (..., C), ``targets`` broadcastable to it; returns (...)."""
    probs = probs.float().clamp(EPS, 1 - EPS)
    targets = targets.float().expand_as(probs)
    per_class = F.binary_cross_entropy(probs, targets, reduction="none")
    if class_weights is not None:
        per_class = per_class * (targets * class_weights + (1 - targets))
    return per_class.mean(dim=-1)


def micro_loss(segment_probs: Tensor, attention: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """L_micro of 002 eq. 7: sum_t a_t xi(y, d_t), one value per clip.

    segment_probs: (B, T, C) d_t; attention: (B, T) a_t; targets: (B, C) clip labels.
    """
    per_segment = weighted_cross_entropy(segment_probs, targets.unsqueeze(1), class_weights)
    return (attention.float() * per_segment).sum(dim=1)


def authors_micro_loss(
    segment_probs: Tensor, attention: Tensor, targets: Tensor, class_weights: Tensor | None = None
) -> Tensor:
    """The micro term of the authors' ``mm_loss``: cross entropy of every segment and
    class, positive terms weighted by ``w_c * a_t`` (a_t detached), negative terms by 1,
    averaged over segments and classes; one value per clip."""
    probs = segment_probs.float().clamp(EPS, 1 - EPS)
    labels = targets.float().unsqueeze(1).expand_as(probs)
    per_term = F.binary_cross_entropy(probs, labels, reduction="none")
    positive_weight = attention.detach().float().unsqueeze(-1)
    if class_weights is not None:
        positive_weight = positive_weight * class_weights
    return (per_term * (labels * positive_weight + (1 - labels))).mean(dim=(1, 2))


__all__ = ["authors_micro_loss", "class_loss_weights", "micro_loss", "weighted_cross_entropy"]
