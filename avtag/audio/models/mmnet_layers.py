"""The layers of M&mnet (002 §2.2-2.5): the macro subnet's stages and classifier, the
micro subnet (f_det and f_att, eq. 4-6), the attention prediction of EP (eq. 9) and the
transposed-convolution up-sampling of M&mnet-MS (§2.5).

Choices where the paper is silent (ours):
- The residual stage is the post-activation He et al. block (conv-BN-ReLU-conv-BN plus the
  1x1 conv-BN shortcut, ReLU after the sum); the authors' pre-activation ordering
  (fearofchou/mmnet ``Mmnet.py``) has the same parameter count.
- The up-sampling is a transposed convolution with kernel = stride = the pooling it undoes,
  followed by BN + ReLU (002 §2.5 names transposed convolutions and no more).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def multi_head_attention(head_logits: Tensor) -> Tensor:
    """a_t of 002 eq. 6: softmax over time (dim 1) for each head, summed over heads.

    head_logits: (B, T, M) v_t; returns (B, T). Each head contributes weights summing to
    one, so a_t sums to M over the clip.
    """
    return torch.softmax(head_logits, dim=1).sum(dim=-1)


def attention_prediction(segment_probs: Tensor, attention: Tensor) -> Tensor:
    """y_att of 002 eq. 9: sum_t alpha_t d_t with alpha = softmax_t(a_t). Returns (B, C)."""
    alpha = torch.softmax(attention, dim=1)
    return (alpha.unsqueeze(-1) * segment_probs).sum(dim=1)


class ConvStage(nn.Module):
    """ConvNet stage: conv1d(k=3) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResidualStage(nn.Module):
    """ResNet stage: two k = 3 convolutions along time (He et al. 2016) and a 1x1
    convolution shortcut (as the authors' ``sk``, in every block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.shortcut = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, bias=False), nn.BatchNorm1d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def classifier(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Module:
    """f_cls: FC + BN + ReLU per hidden width, then the output layer (authors' den1/den2/prd)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, out_features))


class MicroSubnet(nn.Module):
    """f_det and f_att of 002 eq. 4-6 on the segments of one feature map: one
    convolution each over ``kernel`` segments (``kernel=1``: a per-segment FC layer),
    with an optional ``hidden``-unit ReLU layer before it."""

    def __init__(self, in_channels: int, num_classes: int, heads: int, hidden: int | None, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"micro_kernel must be a positive odd number, got {kernel}")
        self.detector = self._layers(in_channels, hidden, num_classes, kernel)
        self.attention = self._layers(in_channels, hidden, heads, kernel)

    @staticmethod
    def _layers(in_channels: int, hidden: int | None, out_channels: int, kernel: int) -> nn.Module:
        if hidden is None:
            return nn.Conv1d(in_channels, out_channels, kernel, padding=kernel // 2)
        return nn.Sequential(
            nn.Conv1d(in_channels, hidden, kernel, padding=kernel // 2), nn.ReLU(), nn.Conv1d(hidden, out_channels, 1)
        )

    def forward(self, feature_map: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """feature_map (B, K, T) -> d_t (B, T, C), a_t (B, T), v_t (B, T, M)."""
        segment_probs = torch.sigmoid(self.detector(feature_map).transpose(1, 2))  # eq. 4
        head_logits = self.attention(feature_map).transpose(1, 2)  # eq. 5
        return segment_probs, multi_head_attention(head_logits), head_logits  # eq. 6


class Upsample(nn.Module):
    """Transposed conv (kernel = stride = the pooling it undoes) + BN + ReLU, cropped to
    the target length (002 §2.5)."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size=factor, stride=factor, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, length: int) -> Tensor:
        out = F.relu(self.bn(self.deconv(x)))
        if out.shape[-1] < length:
            out = F.pad(out, (0, length - out.shape[-1]), mode="replicate")
        return out[..., :length]


__all__ = ["ConvStage", "MicroSubnet", "ResidualStage", "Upsample", "attention_prediction", "classifier", "multi_head_attention"]
