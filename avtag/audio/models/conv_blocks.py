"""The 2-D convolution block the PANNs-style backbones share (Kong et al. 2020, ``ConvBlock``
of qiuqiangkong/audioset_tagging_cnn ``pytorch/models.py``): two 3x3 convolutions, each
followed by batch normalisation and ReLU. :class:`~avtag.audio.models.cnn10.CNN10` pools
after every block, :class:`~avtag.audio.models.resnet38.ResNet38` uses it before and after
its ResNet.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def avg_pool_2x2(x: Tensor) -> Tensor:
    """2x2 average pooling over (time, frequency); ``ceil_mode`` so any input of one frame works."""
    return F.avg_pool2d(x, kernel_size=2, ceil_mode=True)


class DoubleConv(nn.Module):
    """Two 3x3 conv + BN + ReLU layers (no pooling)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class PooledDoubleConv(DoubleConv):
    """:class:`DoubleConv`, then 2x2 average pooling (PANNs' ``ConvBlock`` with ``pool_size=(2, 2)``)."""

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool_2x2(super().forward(x))


__all__ = ["DoubleConv", "PooledDoubleConv", "avg_pool_2x2"]
