"""Spatial and channel-wise attention in a residual CNN (paper 001: Hong, Zou, Wang,
Cao, ICASSP 2020): AT-SCA and its variants AT-S, AT-C, AT-CSA, AT-C//S and the baseline.

Layout: features are ``(batch, channels, time, freq)``; the paper's width ``W`` is
time and its height ``H`` is frequency.

* **Input** (§4.1): "each chunk has 400 frames and 64 frequency bins": a 10-s clip is
  400 x 64 (front-end preset ``"sca"``, 40 frames/s), so ``input_frames = 400``.
* **Backbone** (§4.2): 7 residual blocks and 6 max-pooling layers (one after each of
  the first six blocks), each block "two 3x3 convolution layers with a 1x1 convolution
  layer to change the channel dimension" (a 1x1 convolution shortcut in every block),
  and "batch normalization and ReLU function are applied to all convolution layers":
  BN + ReLU after both 3x3 convolutions and after the 1x1 shortcut; then
  attention pooling (eq. 2): ``Y = sum_j e(q_j) v(q_j) / sum_j e(q_j)`` with
  ``v = sigmoid(FC)`` the tagging function and ``e = exp(FC)`` the attention function.
* **Spatial attention** (§3.1): ``S`` = cross-channel mean (eq. 4);
  global mask ``f5x5(relu(f5x5(S)))`` with BatchNorm on each convolution (eq. 5);
  local mask: every frequency row ``s^h`` (length ``W``) gets its own two-layer FC,
  ``W/r`` hidden units, ``r = 16`` (eq. 6); ``M_s = sigmoid(M_global + M_local)`` (eq. 7).
* **Channel attention** (§3.2): ``Z`` = global average over time and frequency (eq. 8);
  ``M_c = sigmoid(W_1 relu(W_0 Z + b_0) + b_1)``, ``C/r`` hidden units (eq. 9).
* **Arrangements** (§3.3, eq. 10): ``"sca"``: ``F' = M_s(F) F``, ``F'' = M_c(F') F'``;
  ``"csa"``: channel first, then spatial; ``"c//s"``: parallel,
  ``F'' = sigmoid(logits_s(F) + logits_c(F)) F`` (one sigmoid on the summed masks);
  ``"s"`` (AT-S), ``"c"`` (AT-C), ``"none"`` (baseline).
* **Attentive layers** (Table 2): ``attention_blocks`` = 0..3 puts the module in the
  last 1–3 residual blocks. ``spatial_branches`` selects global/local (Table 1 rows).

Outputs: ``clip_probs`` = eq. 2; ``frame_probs`` = ``v(q_j)`` per segment;
``attention["time"]`` = the normalised ``e(q_j)``; ``attention["spatial_block<k>"]``
(batch, time, freq) and ``attention["channel_block<k>"]`` (batch, channels) for the
attentive blocks (``"joint_block<k>"`` (batch, channels, time, freq) for ``"c//s"``).

Choices where the paper is silent:

* Where the module sits in a residual block: on the residual branch before the
  shortcut addition (the squeeze-and-excitation convention of the paper's ref. [20]).
* The block output is the sum of the (attended) residual branch and the shortcut, both
  already BN + ReLU'd, with no further ReLU (it would be the identity on a sum of
  non-negative terms).
* Channel widths ``(32, 64, 128, 128, 256, 256, 512)``; pooling ``(time_pool, 2)`` with
  time pools ``(2, 2, 2, 1, 1, 1)`` and ``ceil_mode`` so 64 (or 60) mel bins end at 1;
  the 400 frames of a 10-s chunk give 50 segments of 0.2 s, and the attentive last three
  blocks see ``W = 50`` time steps (eq. 6's local FC: 50 -> 3 -> 50 per frequency row).
  Any frequency left after the last block is max-pooled.
* Both 5x5 convolutions of eq. 5 keep ``global_channels`` = 1 channel (``S`` is one
  channel and the mask is one channel); padding 2 keeps the size.
* Eq. 6 ties the local FC to the feature-map width ``W``, i.e. to a fixed input length
  (the paper's 400-frame chunks). The model is built for ``input_frames`` (default
  400 = 10 s at the ``"sca"`` preset); inputs of another length have each row
  linearly resampled to ``W`` before the FC and the mask resampled back, so 7-s or 13-s
  clips still work. ``n_mels`` must match (one FC per frequency row).
* Hidden sizes ``max(1, W // r)`` and ``max(1, C // r)``; the same ``r = 16`` for the
  channel FC (eq. 9 says "with the reduction ratio").
* Optimiser, batch size, epochs, batch sampling: the paper gives none;
  ``configs/sca.yaml`` uses Adam, lr 1e-3 (as paper 000 §3.4), batches of 64, plain
  shuffled batches, 30 epochs (docs/recipes.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.audio.models.base import TaggingModel, TaggingOutput, register_model
from avtag.events import NUM_EVENTS

ARRANGEMENTS = ("sca", "csa", "c//s", "s", "c", "none")
SPATIAL_BRANCHES = ("global", "local")
NUM_BLOCKS = 7


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


class GlobalSpatialAttention(nn.Module):
    """Eq. 5: ``M_global = f5x5(relu(f5x5(S)))``, BatchNorm on both convolutions."""

    def __init__(self, hidden_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, hidden_channels, kernel_size=5, padding=2, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden_channels)
        self.conv2 = nn.Conv2d(hidden_channels, 1, kernel_size=5, padding=2, bias=False)
        self.norm2 = nn.BatchNorm2d(1)

    def forward(self, descriptor: Tensor) -> Tensor:
        """``descriptor`` S (B, 1, W, H) -> mask logits (B, 1, W, H)."""
        return self.norm2(self.conv2(F.relu(self.norm1(self.conv1(descriptor)))))


class LocalSpatialAttention(nn.Module):
    """Eq. 6: one two-layer FC per frequency row ``h``, over the ``W`` time steps:
    ``m^h = W_h2 relu(W_h1 s^h + b_h1) + b_h2``."""

    def __init__(self, height: int, width: int, reduction: int = 16) -> None:
        super().__init__()
        self.height, self.width = height, width
        hidden = max(1, width // reduction)
        self.weight1 = nn.Parameter(torch.empty(height, hidden, width))
        self.bias1 = nn.Parameter(torch.empty(height, hidden))
        self.weight2 = nn.Parameter(torch.empty(height, width, hidden))
        self.bias2 = nn.Parameter(torch.empty(height, width))
        for weight, bias in ((self.weight1, self.bias1), (self.weight2, self.bias2)):
            bound = 1.0 / math.sqrt(weight.shape[-1])  # nn.Linear's default range
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, descriptor: Tensor) -> Tensor:
        """``descriptor`` S (B, 1, W', H) -> mask logits (B, 1, W', H)."""
        rows = descriptor[:, 0].transpose(1, 2)  # (B, H, W'): s^1..s^H
        if rows.shape[1] != self.height:
            raise ValueError(
                f"local spatial attention was built for {self.height} frequency rows, got {rows.shape[1]}"
                " (the model's n_mels must match the front-end)"
            )
        length = rows.shape[2]
        if length != self.width:  # another clip length: resample each row to W and back
            rows = F.interpolate(rows, size=self.width, mode="linear", align_corners=False)
        hidden = F.relu(torch.einsum("bhw,hkw->bhk", rows, self.weight1) + self.bias1)
        mask = torch.einsum("bhk,hwk->bhw", hidden, self.weight2) + self.bias2
        if length != self.width:
            mask = F.interpolate(mask, size=length, mode="linear", align_corners=False)
        return mask.transpose(1, 2).unsqueeze(1)


class SpatialAttention(nn.Module):
    """§3.1: mask logits ``M_global + M_local`` of the descriptor ``S`` (eq. 4);
    eq. 7's sigmoid is applied by :class:`AttentionModule`."""

    def __init__(
        self, height: int, width: int, reduction: int, branches: Sequence[str], global_channels: int
    ) -> None:
        super().__init__()
        unknown = set(branches) - set(SPATIAL_BRANCHES)
        if not branches or unknown:
            raise ValueError(f"spatial_branches must be a non-empty subset of {SPATIAL_BRANCHES}, got {branches}")
        self.global_branch = GlobalSpatialAttention(global_channels) if "global" in branches else None
        self.local_branch = LocalSpatialAttention(height, width, reduction) if "local" in branches else None

    def forward(self, features: Tensor) -> Tensor:
        descriptor = features.mean(dim=1, keepdim=True)  # eq. 4
        logits = torch.zeros_like(descriptor)
        if self.global_branch is not None:
            logits = logits + self.global_branch(descriptor)
        if self.local_branch is not None:
            logits = logits + self.local_branch(descriptor)
        return logits


class ChannelAttention(nn.Module):
    """§3.2: mask logits ``W_1 relu(W_0 Z + b_0) + b_1`` of ``Z`` = spatial mean (eq. 8–9)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc0 = nn.Linear(channels, hidden)
        self.fc1 = nn.Linear(hidden, channels)

    def forward(self, features: Tensor) -> Tensor:
        descriptor = features.mean(dim=(2, 3))  # eq. 8
        return self.fc1(F.relu(self.fc0(descriptor)))[:, :, None, None]


class AttentionModule(nn.Module):
    """§3.3 / eq. 10: spatial and channel attention in one of the arrangements."""

    def __init__(
        self,
        arrangement: str,
        channels: int,
        height: int,
        width: int,
        reduction: int = 16,
        spatial_branches: Sequence[str] = SPATIAL_BRANCHES,
        global_channels: int = 1,
    ) -> None:
        super().__init__()
        if arrangement not in ARRANGEMENTS or arrangement == "none":
            raise ValueError(f"arrangement must be one of {ARRANGEMENTS[:-1]}, got {arrangement!r}")
        self.arrangement = arrangement
        use_spatial = arrangement != "c"
        use_channel = arrangement != "s"
        self.spatial = (
            SpatialAttention(height, width, reduction, spatial_branches, global_channels) if use_spatial else None
        )
        self.channel = ChannelAttention(channels, reduction) if use_channel else None

    def forward(self, features: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Refined features and the masks applied (``spatial`` (B, W, H), ``channel``
        (B, C), or ``joint`` (B, C, W, H) for the parallel arrangement)."""
        maps: dict[str, Tensor] = {}
        if self.arrangement == "c//s":
            joint = torch.sigmoid(self.spatial(features) + self.channel(features))
            maps["joint"] = joint
            return joint * features, maps
        order = {"sca": "sc", "csa": "cs", "s": "s", "c": "c"}[self.arrangement]
        for step in order:
            if step == "s":
                mask = torch.sigmoid(self.spatial(features))  # eq. 7
                maps["spatial"] = mask[:, 0]
            else:
                mask = torch.sigmoid(self.channel(features))  # eq. 9
                maps["channel"] = mask[:, :, 0, 0]
            features = mask * features  # eq. 10
        return features, maps


class ResidualBlock(nn.Module):
    """001 §4.2: two 3x3 conv + BN + ReLU on the residual branch, a 1x1 conv + BN + ReLU
    shortcut, optional attention on the residual branch before the sum."""

    def __init__(self, in_channels: int, out_channels: int, attention: AttentionModule | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
        )
        self.attention = attention

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        branch = F.relu(self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x))))))
        maps: dict[str, Tensor] = {}
        if self.attention is not None:
            branch, maps = self.attention(branch)
        return branch + self.shortcut(x), maps


@register_model("sca")
class SpatialChannelAttentionNet(TaggingModel):
    """AT-SCA and variants (paper 001). Input ``(batch, frames, n_mels)`` log-mel."""

    default_frontend = "sca"

    def __init__(
        self,
        num_classes: int = NUM_EVENTS,
        attention: str = "sca",
        attention_blocks: int = 3,
        channels: list[int] = [32, 64, 128, 128, 256, 256, 512],  # noqa: B006 - recorded as JSON
        time_pools: list[int] = [2, 2, 2, 1, 1, 1],  # noqa: B006
        n_mels: int = 64,
        input_frames: int = 400,
        reduction: int = 16,
        spatial_branches: list[str] = ["global", "local"],  # noqa: B006
        global_channels: int = 1,
    ) -> None:
        super().__init__()
        if attention not in ARRANGEMENTS:
            raise ValueError(f"attention must be one of {ARRANGEMENTS}, got {attention!r}")
        if not 0 <= attention_blocks <= 3:
            raise ValueError(f"attention_blocks must be 0..3 (the last 1-3 residual blocks), got {attention_blocks}")
        if len(channels) != NUM_BLOCKS or len(time_pools) != NUM_BLOCKS - 1:
            raise ValueError(f"need {NUM_BLOCKS} channel widths and {NUM_BLOCKS - 1} time pools")
        self.n_mels = n_mels
        self.time_stride = math.prod(time_pools)
        attentive = set() if attention == "none" else set(range(NUM_BLOCKS - attention_blocks, NUM_BLOCKS))
        blocks, pools = [], []
        width, height, in_channels = input_frames, n_mels, 1
        for index, out_channels in enumerate(channels):
            module = (
                AttentionModule(attention, out_channels, height, width, reduction, spatial_branches, global_channels)
                if index in attentive
                else None
            )
            blocks.append(ResidualBlock(in_channels, out_channels, module))
            if index < NUM_BLOCKS - 1:
                pools.append(nn.MaxPool2d((time_pools[index], 2), ceil_mode=True))
                width, height = _ceil_div(width, time_pools[index]), _ceil_div(height, 2)
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.pools = nn.ModuleList(pools)
        self.tagging = nn.Linear(in_channels, num_classes)  # v(.) of eq. 2
        self.attention_fc = nn.Linear(in_channels, num_classes)  # e(.) of eq. 2, via exp

    def forward(self, features: Tensor) -> TaggingOutput:
        if features.ndim != 3 or features.shape[2] != self.n_mels:
            raise ValueError(f"expected (batch, frames, {self.n_mels}) log-mel features, got {tuple(features.shape)}")
        x = features.unsqueeze(1)
        maps: dict[str, Tensor] = {}
        for index, block in enumerate(self.blocks):
            x, block_maps = block(x)
            for name, value in block_maps.items():
                maps[f"{name}_block{index + 1}"] = value
            if index < len(self.pools):
                x = self.pools[index](x)
        segments = x.amax(dim=3).transpose(1, 2)  # (B, T', C): instance representations q_j
        segment_probs = torch.sigmoid(self.tagging(segments))
        weights = torch.softmax(self.attention_fc(segments).float(), dim=1).to(segment_probs.dtype)
        clip_probs = (weights * segment_probs).sum(dim=1)  # eq. 2
        return TaggingOutput(clip_probs, segment_probs, {"time": weights, **maps}, frame_stride=self.time_stride)
