"""PANNs-style ResNet38 (Kong et al., "PANNs", 2020), the largest global-stream
backbone of GL-AT's Table 1 (003 §3.1), written from the published architecture
(qiuqiangkong/audioset_tagging_cnn ``pytorch/models.py``, ``ResNet38``):

* batch normalisation over the mel bins of the input log-mel map;
* a conv block (two 3x3 conv + BN + ReLU, 64 channels), 2x2 average pooling, dropout 0.2;
* a ResNet of basic blocks, (3, 4, 6, 3) blocks of 64, 128, 256, 512 channels; the first
  block of the last three stages halves time and frequency by 2x2 average pooling
  before its convolutions, and its shortcut is 2x2 average pooling + 1x1 conv + BN
  (PANNs' anti-aliased downsampling); dropout 0.1 between a block's two convolutions;
* 2x2 average pooling, dropout 0.2, a conv block to 2048 channels, dropout 0.2;
* mean over frequency -> frame-wise features M (B, T/32, 2048); clip feature = max over
  time + mean over time; dropout 0.5, FC 2048 -> 2048 + ReLU, FC -> classes, sigmoid.

73.7 M parameters at 527 classes, PANNs' figure for ResNet38. As for
:class:`avtag.audio.models.cnn10.CNN10`, the frame-level output is the same classifier on
every frame of M (GL-AT's class-wise activation S_g, 003 §2.2), one entry per 32 input
frames (0.32 s with the "cnn" front-end preset).

Choices where the paper is silent:

* Pooling uses ``ceil_mode=True`` (any input of at least one frame works).
* No SpecAugment/mixup inside the model: augmentation belongs to the data pipeline.
* Kaiming-normal initialisation for convolutions, Xavier-uniform for linear layers, the
  last BN of every residual block initialised to zero (PANNs' ``zero_init_residual``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.audio.models.base import TaggingModel, TaggingOutput, register_model
from avtag.audio.models.conv_blocks import DoubleConv, avg_pool_2x2
from avtag.events import NUM_EVENTS

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_CHANNELS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """ResNet basic block; ``downsample`` halves time and frequency by average pooling."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(0.1)
        self.shortcut: nn.Module = nn.Identity()
        if downsample or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample:
            x = avg_pool_2x2(x)
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_model("resnet38")
class ResNet38(TaggingModel):
    """PANNs-style ResNet38 tagger over log-mel features (B, T, n_mels).

    Args:
        num_classes: output classes (17 DCASE 2017 Task 4 events by default; 527 AudioSet).
        n_mels: mel bins of the input features (64 with the "cnn" front-end preset).
        embedding_dim: width of the final conv block and of the classifier's hidden layer.
        stage_channels, stage_blocks: widths and block counts of the four ResNet stages
            (PANNs: 64, 128, 256, 512 and 3, 4, 6, 3; smaller values only for tests).
    """

    default_frontend = "cnn"
    time_stride = 32  # 2 (first conv block) x 2 x 2 x 2 (stages 2-4) x 2 (after the ResNet)

    def __init__(
        self,
        num_classes: int = NUM_EVENTS,
        n_mels: int = 64,
        embedding_dim: int = 2048,
        stage_channels: list[int] = list(STAGE_CHANNELS),  # noqa: B006 - recorded as JSON, never mutated
        stage_blocks: list[int] = list(STAGE_BLOCKS),  # noqa: B006
    ) -> None:
        super().__init__()
        if len(stage_channels) != 4 or len(stage_blocks) != 4 or min(stage_blocks) < 1:
            raise ValueError("stage_channels and stage_blocks need four entries (at least one block each)")
        self.input_norm = nn.BatchNorm1d(n_mels)
        self.conv_block1 = DoubleConv(1, stage_channels[0])
        blocks: list[nn.Module] = []
        in_channels = stage_channels[0]
        for stage, (count, channels) in enumerate(zip(stage_blocks, stage_channels)):
            for index in range(count):
                blocks.append(BasicBlock(in_channels, channels, downsample=stage > 0 and index == 0))
                in_channels = channels
        self.resnet = nn.Sequential(*blocks)
        self.conv_block_after = DoubleConv(in_channels, embedding_dim)
        self.dropout_conv = nn.Dropout(0.2)
        self.dropout_clip = nn.Dropout(0.5)
        self.fc_embedding = nn.Linear(embedding_dim, embedding_dim)
        self.fc_classes = nn.Linear(embedding_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            elif isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
        for block in self.resnet:
            nn.init.zeros_(block.bn2.weight)

    def frame_features(self, features: Tensor) -> Tensor:
        """Frame-wise features M (B, ceil(T / 32), embedding_dim)."""
        x = self.input_norm(features.transpose(1, 2)).transpose(1, 2).unsqueeze(1)  # (B, 1, T, F)
        x = self.dropout_conv(avg_pool_2x2(self.conv_block1(x)))
        x = self.dropout_conv(avg_pool_2x2(self.resnet(x)))
        x = self.dropout_conv(self.conv_block_after(x))
        return x.mean(dim=3).transpose(1, 2)

    def classify(self, pooled: Tensor) -> Tensor:
        """Classifier: dropout 0.5, FC + ReLU, FC (logits)."""
        return self.fc_classes(F.relu(self.fc_embedding(self.dropout_clip(pooled))))

    def forward(self, features: Tensor) -> TaggingOutput:
        frames = self.frame_features(features)
        clip_probs = torch.sigmoid(self.classify(frames.amax(dim=1) + frames.mean(dim=1)))
        frame_probs = torch.sigmoid(self.classify(frames))
        return TaggingOutput(clip_probs=clip_probs, frame_probs=frame_probs, frame_stride=self.time_stride)
