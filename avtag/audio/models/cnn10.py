"""CNN10-like tagger: the 4-block VGG-style CNN of PANNs (Kong et al. 2020), one of the
global-stream backbones GL-AT is evaluated on (003 §3.1, Table 1).

Architecture (written from the published description):

* batch normalisation over the mel bins of the input log-mel map;
* four conv blocks with 64, 128, 256, 512 channels, each two 3x3 convolutions
  (BN + ReLU after each) followed by 2x2 average pooling and dropout 0.2;
* mean over the remaining frequency axis -> frame-wise features M (B, T/16, 512);
* clip feature M' = max over time + mean over time (003 §2.1 "both maximum and average
  operations are used for global pooling");
* classifier C = two fully connected layers (512 -> 512 -> classes, ReLU), sigmoid (003
  eq. 1-2), with dropout 0.5 before the first only: PANNs' Cnn10 (qiuqiangkong/
  audioset_tagging_cnn ``pytorch/models.py``) applies its second dropout to the returned
  embedding, not to the classifier's input.

Frame-level output: the same classifier C applied to every frame of M, as GL-AT (003
§2.2) computes its class-wise activation S_g. It is returned at the network's own
resolution (one entry per 16 input frames: 0.16 s with the "cnn" front-end preset);
``TaggingOutput.frame_hop`` (set by the tagger) records that hop, so nothing is upsampled.

Choices where the paper is silent:

* Pooling uses ``ceil_mode=True``, so any input of at least one frame works (a crop
  shorter than 16 frames still yields one segment); the last, partial window is
  averaged over the frames it holds.
* No SpecAugment/mixup inside the model: augmentation belongs to the data pipeline.
* Xavier-uniform initialisation for conv and linear layers, BN weight 1 / bias 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.audio.models.base import TaggingModel, TaggingOutput, register_model
from avtag.audio.models.conv_blocks import PooledDoubleConv
from avtag.events import NUM_EVENTS


ConvBlock2d = PooledDoubleConv  # the name of earlier releases


def _init_weights(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


@register_model("cnn10")
class CNN10(TaggingModel):
    """PANNs-CNN10-like tagger over log-mel features (B, T, n_mels).

    Args:
        num_classes: output classes (17 DCASE 2017 Task 4 events by default).
        n_mels: mel bins of the input features (64 with the "cnn" front-end preset).
        channels: output channels of the four conv blocks.
        embedding_dim: width of the classifier's hidden layer.
        block_dropout: dropout after each conv block.
        classifier_dropout: dropout before the first classifier layer (PANNs: 0.5).
    """

    default_frontend = "cnn"
    # Total time down-sampling: one output segment per this many input frames.
    time_stride = 16

    def __init__(
        self,
        num_classes: int = NUM_EVENTS,
        n_mels: int = 64,
        channels: tuple[int, ...] | list[int] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        block_dropout: float = 0.2,
        classifier_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        channels = list(channels)
        self.time_stride = 2 ** len(channels)
        self.input_norm = nn.BatchNorm1d(n_mels)
        blocks, in_channels = [], 1
        for out_channels in channels:
            blocks.append(PooledDoubleConv(in_channels, out_channels))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.block_dropout = nn.Dropout(block_dropout)
        self.classifier_dropout = nn.Dropout(classifier_dropout)
        self.fc_embedding = nn.Linear(in_channels, embedding_dim)
        self.fc_classes = nn.Linear(embedding_dim, num_classes)
        _init_weights(self)

    def frame_features(self, features: Tensor) -> Tensor:
        """Global frame-wise feature M (B, segments, channels) of 003 §2.1."""
        x = self.input_norm(features.transpose(1, 2)).transpose(1, 2)  # normalise mel bins
        x = x.unsqueeze(1)  # (B, 1, T, F)
        for block in self.blocks:
            x = self.block_dropout(block(x))
        return x.mean(dim=3).transpose(1, 2)  # mean over frequency

    def classify(self, pooled: Tensor) -> Tensor:
        """Classifier C (003 eq. 1): two FC layers, returns logits."""
        hidden = F.relu(self.fc_embedding(self.classifier_dropout(pooled)))
        return self.fc_classes(hidden)  # no dropout here, as PANNs' Cnn10

    def forward(self, features: Tensor) -> TaggingOutput:
        frames = self.frame_features(features)
        pooled = frames.amax(dim=1) + frames.mean(dim=1)  # max + mean over time
        clip_probs = torch.sigmoid(self.classify(pooled))  # 003 eq. 2
        frame_probs = torch.sigmoid(self.classify(frames))  # S_g, 003 §2.2
        return TaggingOutput(clip_probs=clip_probs, frame_probs=frame_probs, frame_stride=self.time_stride)
