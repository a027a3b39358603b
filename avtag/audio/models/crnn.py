"""The CRNN + max-pooling MIL baseline of 004 (Li et al., ICASSP 2018), §2.1 and §3.2.

Log-mel features (2000 x 60 per 10 s clip at 200 frames/s, preset "crnn") are treated
as an image and passed through convolution + local max-pooling layers that bring the
frame rate down from 200 Hz to 10 Hz (100 segments per clip); a bidirectional GRU with
100 units per direction models the segment sequence; a fully connected layer with one
sigmoid per event gives segment-level probabilities P(e_k | x_ij); max pooling over
time gives the clip probability P(e_k | x_i) = max_j P(e_k | x_ij) (004 §2.1). Dropout
0.2 follows every pooling layer and the GRU (004 §3.2). The loss is the clip-level
cross entropy averaged over clips and events (004 §2.1, the base-class default).

The MIL pooling is selectable (``pooling=`` any of
:data:`avtag.audio.pooling.POOLING_NAMES`) so the same network can compare max,
average, linear softmax, exponential softmax and class-aware attention pooling; the
paper's model is ``pooling="max"`` (the default).

Choices where the paper is silent:
- Convolution stack: four blocks of 3x3 convolution (same padding, no bias) + batch
  norm + ReLU, each followed by a max-pooling layer and dropout 0.2. Channels
  64, 64, 128, 128. Pooling (time x frequency): 2x2, 2x2, 5x3, 1x5, i.e. time 20x
  (200 Hz -> 10 Hz) and frequency 60 -> 30 -> 15 -> 5 -> 1. Other ``n_mels`` work:
  the remaining frequency bins (floor division) are flattened with the channels into
  the GRU input.
- Inputs whose frame count is not a multiple of 20 (the total time pooling) are padded
  at the end by repeating the last frame, so the tail forms a final (partial) segment
  and the output has ``ceil(T / 20)`` segments; repeating an existing frame cannot
  create evidence for an event the clip does not contain.
- Class-aware attention pooling (000 eq. 1) reads its attention from the GRU input,
  i.e. the convolutional segment embeddings h_i, as in 000 §3.2 (the classifier is
  GRU + FC, the attention a separate FC on h_i).
- Sigmoid and pooling run in float32 under mixed precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avtag.audio.models.base import TaggingModel, TaggingOutput, register_model
from avtag.audio.pooling import get_pooling


class ConvBlock(nn.Sequential):
    """3x3 conv + BN + ReLU, then local max pooling and dropout (004 §3.2)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int], dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=pool, stride=pool),
            nn.Dropout(dropout),
        )


@register_model("crnn")
class CRNN(TaggingModel):
    """Conv + max-pool layers -> BiGRU(100) -> FC sigmoid per segment -> MIL pooling.

    Args:
        n_mels: mel bins of the input features (60 for 004).
        num_classes: events (17 for DCASE 2017 Task 4).
        pooling: MIL pooling over segments ("max" in 004).
        conv_channels: output channels of the conv blocks.
        time_pools: time pooling factor of each block (product 20: 200 Hz -> 10 Hz).
        freq_pools: frequency pooling factor of each block.
        rnn_hidden: GRU units per direction (100 in 004).
        dropout: dropout after each pooling layer and after the GRU (0.2 in 004).
    """

    default_frontend = "crnn"

    def __init__(
        self,
        n_mels: int = 60,
        num_classes: int = 17,
        pooling: str = "max",
        conv_channels: Sequence[int] = (64, 64, 128, 128),
        time_pools: Sequence[int] = (2, 2, 5, 1),
        freq_pools: Sequence[int] = (2, 2, 3, 5),
        rnn_hidden: int = 100,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not len(conv_channels) == len(time_pools) == len(freq_pools):
            raise ValueError("conv_channels, time_pools and freq_pools need one entry per block")
        self.n_mels = n_mels
        self.num_classes = num_classes
        self.time_reduction = math.prod(time_pools)
        self.time_stride = self.time_reduction
        blocks, in_channels, freq_bins = [], 1, n_mels
        for out_channels, t_pool, f_pool in zip(conv_channels, time_pools, freq_pools):
            blocks.append(ConvBlock(in_channels, out_channels, (t_pool, f_pool), dropout))
            in_channels, freq_bins = out_channels, freq_bins // f_pool
        if freq_bins < 1:
            raise ValueError(f"frequency pooling {list(freq_pools)} leaves no bins of {n_mels} mels")
        self.conv = nn.Sequential(*blocks)
        self.embedding_size = in_channels * freq_bins
        self.gru = nn.GRU(self.embedding_size, rnn_hidden, batch_first=True, bidirectional=True)
        self.gru_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * rnn_hidden, num_classes)
        self.pooling = get_pooling(pooling, in_features=self.embedding_size, num_classes=num_classes)

    def num_segments(self, num_frames: int) -> int:
        """Segments output for ``num_frames`` input frames: ceil(T / time_reduction)."""
        return -(-num_frames // self.time_reduction)

    def embed(self, features: Tensor) -> Tensor:
        """(B, T, n_mels) -> segment embeddings h (B, ceil(T/20), embedding_size)."""
        if features.dim() != 3 or features.shape[-1] != self.n_mels:
            raise ValueError(f"expected features (batch, frames, {self.n_mels}), got {tuple(features.shape)}")
        if features.shape[1] == 0:
            raise ValueError("features have no frames")
        x = features.unsqueeze(1)  # (B, 1, T, F)
        remainder = (-x.shape[2]) % self.time_reduction
        if remainder:
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, remainder, -1)], dim=2)
        x = self.conv(x)  # (B, C, T/20, F')
        return x.permute(0, 2, 1, 3).flatten(2)  # (B, T/20, C * F')

    def forward(self, features: Tensor) -> TaggingOutput:
        embeddings = self.embed(features)
        hidden, _ = self.gru(embeddings)
        logits = self.classifier(self.gru_dropout(hidden))
        frame_probs = torch.sigmoid(logits.float())
        clip_probs, weights = self.pooling(frame_probs, embeddings)
        attention = {} if weights is None else {"time": weights}
        return TaggingOutput(
            clip_probs=clip_probs, frame_probs=frame_probs, attention=attention, frame_stride=self.time_stride
        )
