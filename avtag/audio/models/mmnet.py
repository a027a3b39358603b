"""M&mnet and M&mnet-MS: macro (clip) supervision plus attentional micro (segment)
supervision (Chou, Jang, Yang, IJCAI 2018 -- paper 002).

* Macro subnet (002 §2.2, eq. 1-2): a feature-learning stack f_cnn of 1-D convolutions
  along time (002 footnote 2: the mel bins are the input channels, the feature map X is
  K x T), a ResNet (or a plain ConvNet, ``macro="convnet"``), mean pooling over time and
  a fully connected classification stack f_cls with a sigmoid.
* Micro subnet (002 §2.3, eq. 4-6): for every segment x_t of X a detector
  d_t = sigmoid(f_det(x_t)) and an M-head attention vector v_t = f_att(x_t); each head is
  normalised by a softmax over the T segments and the heads are summed into a_t.
* Loss (002 eq. 3, 7, 8): xi(y, y_hat) + lambda * sum_t a_t xi(y, d_t), lambda = 1, with
  per-class loss weights w_c (002 eq. 11, beta = 0.3); the losses, the eq. 11 weights and
  the authors' micro-loss form (``micro_loss="authors"``) are in :mod:`avtag.audio.models.mmnet_loss`,
  the layers in :mod:`avtag.audio.models.mmnet_layers` (both re-exported here).
* Ensemble prediction EP (002 eq. 9): y_ens = mu * y_hat + (1 - mu) * sum_t alpha_t d_t,
  alpha = softmax_t(a_t), mu = 0.5. ``ensemble=False`` gives the "without EP" row of
  002 Table 1 (clip_probs = y_hat).
* M&mnet-MS (002 §2.5, eq. 10): a micro subnet on each of the L feature maps X^(1..L) of
  f_cnn and on L - 1 maps up-sampled from X^(L) with transposed convolutions, 2L - 1
  micro subnets in all (Table 4: "12+10" layers, L = 3, five micro subnets).

Sizes (002 Table 1, DCASE17, 128 mel bins, 17 classes): the ResNet has 3.70 M
parameters and the micro subnet adds 0.46 M with two layers ("12+2", footnote 5: the
attention and the detection layer). The layout that gives exactly these counts is the
authors' (fearofchou/mmnet ``Mmnet.py``): a k = 3 stem convolution 128 -> 128, three
residual blocks 128 -> 256 -> 384 -> 384 (two k = 3 convolutions, a 1x1 convolution
shortcut), max pooling by 4 after the first two blocks (time stride 16), f_cls = two
1024-unit FC layers with BN + ReLU and the output layer (3.70 M); f_det and f_att are one
k = 3 convolution each over the segments, f_att with M = 384 heads (+0.46 M). These are
the defaults: the paper states the counts, only the authors' code the shapes.
M&mnet-MS at 527 classes: 7.92 M, Table 4's "8M" (the arithmetic is in :class:`MMNetMS`).

Segment length: 16 input frames x 492 / 44100 = 0.1785 s with the "mmnet" front-end
preset (hop 492, authors' code), the 0.18 s of 002 §3 / Fig. 6.

Choices where the paper is silent:

* ``macro="convnet"`` (Table 1's ConvNet row): the same layout with one convolution per
  stage and no shortcut; Table 1's 1.54 M comes from a layout neither the paper nor the
  code gives, so this ConvNet has 2.3 M parameters.
* Input batch normalisation over the mel bins (the authors' ``self.bn``) after the
  training-set standardisation of 002 §2.7 (``feature_statistics_clips`` in the config).
* Pooling uses ``ceil_mode=True``: any input length works (T' = ceil(T / 16)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.audio.models.base import TaggingModel, TaggingOutput, register_model
from avtag.audio.models.mmnet_layers import (  # noqa: F401 - re-exported: part of this module's API
    ConvStage,
    MicroSubnet,
    ResidualStage,
    Upsample,
    attention_prediction,
    classifier,
    multi_head_attention,
)
from avtag.audio.models.mmnet_loss import (  # noqa: F401 - re-exported: part of this module's API
    authors_micro_loss,
    class_loss_weights,
    micro_loss,
    weighted_cross_entropy,
)
from avtag.events import NUM_EVENTS

MACRO_KINDS = ("convnet", "resnet")


# --------------------------------------------------------------------------- models


MICRO_LOSSES = ("paper", "authors")


@register_model("mmnet")
class MMNet(TaggingModel):
    """M&mnet (002 §2.2-2.4) over log-mel features (B, T, n_mels).

    Args:
        num_classes: output classes.
        n_mels: mel bins of the input (128 with the "mmnet" front-end preset).
        macro: ``"resnet"`` (Table 1's M&mnet) or ``"convnet"`` feature-learning stack.
        channels: widths of the stem convolution and of each block (stage).
        time_pools: max pooling after the stem and after each block (None: 1 after the
            stem and the last block, 4 after the others; time stride 16).
        classifier_hidden: hidden FC widths of f_cls.
        attention_heads: M, the attention heads of f_att (eq. 5-6), or ``"channels"``: as many
            heads as the subnet's feature map has channels (M = K^(l), the authors' multi-scale
            ``Mmnet.py``; the same 384 as the default for the single-scale model).
        micro_kernel: segments each f_det / f_att convolution sees (1: a per-segment FC).
        micro_hidden: hidden width of f_det/f_att, or None for single layers ("+2").
        micro_weight: lambda of eq. 8.
        micro_loss: ``"paper"`` (eq. 7) or ``"authors"`` (their ``mm_loss``).
        ensemble: use EP (eq. 9) for ``clip_probs``; False = "without EP".
        ensemble_mu: mu of eq. 9.
        class_weights: w_c of eq. 11 (see :func:`class_loss_weights`); ``"auto"`` to
            compute them from the training labels when training starts (the training
            loop calls :meth:`fit_class_weights`; the result is saved in the state
            dict); or None for unweighted cross entropy.
    """

    default_frontend = "mmnet"
    multi_scale = False

    def __init__(
        self,
        num_classes: int = NUM_EVENTS,
        n_mels: int = 128,
        macro: str = "resnet",
        channels: Sequence[int] = (128, 256, 384, 384),
        time_pools: Sequence[int] | None = None,
        classifier_hidden: Sequence[int] = (1024, 1024),
        attention_heads: int | str = 384,
        micro_kernel: int = 3,
        micro_hidden: int | None = None,
        micro_weight: float = 1.0,
        micro_loss: str = "paper",
        ensemble: bool = True,
        ensemble_mu: float = 0.5,
        class_weights: list[float] | str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(class_weights, str) and class_weights != "auto":
            raise ValueError(f"class_weights must be a list, 'auto' or None, got {class_weights!r}")
        if isinstance(attention_heads, str) and attention_heads != "channels":
            raise ValueError(f"attention_heads must be a number or 'channels', got {attention_heads!r}")
        if macro not in MACRO_KINDS:
            raise ValueError(f"macro must be one of {MACRO_KINDS}, got {macro!r}")
        if micro_loss not in MICRO_LOSSES:
            raise ValueError(f"micro_loss must be one of {MICRO_LOSSES}, got {micro_loss!r}")
        if isinstance(class_weights, list | tuple) and len(class_weights) != num_classes:
            raise ValueError(f"class_weights needs {num_classes} entries, got {len(class_weights)}")
        if not 0.0 <= ensemble_mu <= 1.0:
            raise ValueError("ensemble_mu must lie in [0, 1]")
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError("channels needs the stem width and at least one block width")
        pools = [1] + [4] * (len(channels) - 2) + [1] if time_pools is None else [int(p) for p in time_pools]
        if len(pools) != len(channels) or min(pools) < 1:
            raise ValueError(f"time_pools needs one factor >= 1 per entry of channels, got {pools}")
        self.pools = pools
        self.micro_weight = micro_weight
        self.micro_loss_form = micro_loss
        self.ensemble = ensemble
        self.ensemble_mu = ensemble_mu
        self.time_stride = math.prod(pools)
        self.auto_class_weights = class_weights == "auto"
        if self.auto_class_weights:  # filled by fit_class_weights; saved with the weights
            self.register_buffer("class_weights", torch.ones(num_classes))
        else:
            self.register_buffer(
                "class_weights",
                torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None,
                persistent=False,
            )

        stage_type = ResidualStage if macro == "resnet" else ConvStage
        self.input_norm = nn.BatchNorm1d(n_mels)
        self.stem = nn.Sequential(nn.Conv1d(n_mels, channels[0], 3, padding=1, bias=False), nn.BatchNorm1d(channels[0]), nn.ReLU())
        self.stages = nn.ModuleList(stage_type(channels[i], channels[i + 1]) for i in range(len(channels) - 1))
        self.classifier = classifier(channels[-1], [int(w) for w in classifier_hidden], num_classes)  # f_cls

        # Micro subnets: on X^(L) only, or (MS) on X^(1..L) and the L-1 up-sampled maps.
        levels = len(channels) - 1  # L: one feature map per block
        tap_widths = channels[: levels - 1] + channels[-1:]  # K^(1..L): block inputs, then X
        tap_strides = [math.prod(pools[: i + 1]) for i in range(levels - 1)] + [self.time_stride]
        if self.multi_scale:
            ratios = [b // a for a, b in zip(tap_strides, tap_strides[1:])]  # T^(l) / T^(l+1)
            targets = list(reversed(tap_widths[:-1]))
            sources = [tap_widths[-1], *targets[:-1]]
            self.upsamplers = nn.ModuleList(
                Upsample(src, dst, factor) for src, dst, factor in zip(sources, targets, reversed(ratios))
            )
            micro_widths = tap_widths + targets
        else:
            self.upsamplers = nn.ModuleList()
            micro_widths = tap_widths[-1:]
        self.micro = nn.ModuleList(
            MicroSubnet(width, num_classes, width if attention_heads == "channels" else attention_heads, micro_hidden,
                        micro_kernel)
            for width in micro_widths
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # He et al. init, 002 §2.7

    def feature_maps(self, features: Tensor) -> list[Tensor]:
        """X^(1), ..., X^(L) of 002 §2.5, each (B, K_l, T_l): the input of blocks 1 .. L-1
        (the stem's output, then each block's pooled output) and, last, X of eq. 1 (the last
        block's pooled output); the taps of the authors' multi-scale ``Mmnet.py``."""
        x = self.input_norm(features.transpose(1, 2))
        x = F.max_pool1d(self.stem(x), self.pools[0], ceil_mode=True) if self.pools[0] > 1 else self.stem(x)
        maps = []
        for stage, pool in zip(self.stages, self.pools[1:]):
            maps.append(x)
            x = stage(x)
            if pool > 1:
                x = F.max_pool1d(x, pool, ceil_mode=True)
        maps[-1] = x  # the last block's input is not a tap: X^(L) = X
        return maps

    def micro_inputs(self, maps: list[Tensor]) -> list[Tensor]:
        """Feature maps that get a micro subnet: [X^(L)], or for MS the L maps X^(1..L)
        followed by the maps up-sampled from X^(L) to T^(L-1), ..., T^(1)."""
        if not self.multi_scale:
            return maps[-1:]
        upsampled, x = [], maps[-1]
        for upsample, target in zip(self.upsamplers, reversed(maps[:-1])):
            x = upsample(x, target.shape[-1])
            upsampled.append(x)
        return maps + upsampled

    def forward(self, features: Tensor) -> TaggingOutput:
        maps = self.feature_maps(features)
        macro_probs = torch.sigmoid(self.classifier(maps[-1].mean(dim=-1)))  # eq. 2, mean pooling

        segment_probs, attentions, heads, attention_preds = [], [], [], []
        for subnet, feature_map in zip(self.micro, self.micro_inputs(maps)):
            probs, attention, head_logits = subnet(feature_map)
            segment_probs.append(probs)
            attentions.append(attention)
            heads.append(head_logits)
            attention_preds.append(attention_prediction(probs, attention))
        attention_probs = torch.stack(attention_preds).mean(dim=0)

        if self.ensemble:  # eq. 9
            clip_probs = self.ensemble_mu * macro_probs + (1 - self.ensemble_mu) * attention_probs
        else:
            clip_probs = macro_probs

        # frame_probs on X^(L)'s segments (0.18 s): finer levels averaged down to them.
        segments = maps[-1].shape[-1]
        frame_probs = torch.stack(
            [F.adaptive_avg_pool1d(p.transpose(1, 2), segments).transpose(1, 2) for p in segment_probs]
        ).mean(dim=0)
        last = len(self.stages) - 1 if self.multi_scale else 0
        attention_maps = {"segment": attentions[last]}
        if self.multi_scale:
            attention_maps.update({f"segment@{level + 1}": a for level, a in enumerate(attentions)})
        return TaggingOutput(
            clip_probs=clip_probs,
            frame_probs=frame_probs,
            attention=attention_maps,
            extras={
                "macro_probs": macro_probs,
                "attention_probs": attention_probs,
                "segment_probs": segment_probs,
                "segment_attention": attentions,
                "head_logits": heads,
            },
            frame_stride=self.time_stride,
        )

    def fit_class_weights(self, targets: Tensor | np.ndarray, beta: float = 0.3) -> None:
        """Set the eq. 11 weights from the training label matrix (only with ``"auto"``)."""
        if self.auto_class_weights:
            weights = torch.tensor(class_loss_weights(targets, beta), dtype=torch.float32)
            self.class_weights.copy_(weights.to(self.class_weights.device))

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        """002 eq. 8 (eq. 10 for MS), averaged over the batch:
        xi(y, y_hat) + lambda * sum_levels L_micro (eq. 7, or the authors' form)."""
        extras = output.extras
        micro = micro_loss if self.micro_loss_form == "paper" else authors_micro_loss
        total = weighted_cross_entropy(extras["macro_probs"], targets, self.class_weights)
        for probs, attention in zip(extras["segment_probs"], extras["segment_attention"]):
            total = total + self.micro_weight * micro(probs, attention, targets, self.class_weights)
        return total.mean()


@register_model("mmnet_ms")
class MMNetMS(MMNet):
    """M&mnet-MS (002 §2.5, eq. 10): micro subnets on L = 3 feature maps X^(1..3) of f_cnn
    (time strides 1, 4, 16) and on the L - 1 = 2 maps up-sampled from X^(3) by transposed
    convolutions (kernel = stride = 4) to the strides 4 and 1: five micro subnets, "12+10"
    layers (Table 4). Same arguments as :class:`MMNet`.

    The taps are the authors' (fearofchou/mmnet ``MusciAutoTagging/net/Mmnet.py``,
    ``Mmnet_1D_MS_att``, the repository's only multi-scale M&mnet, written for music
    auto-tagging with other widths; 002 names no tap): the input of block 1 (the stem's output, K = 128), the
    input of block 2 (block 1's pooled output, K = 256) and the final map X (K = 384); the
    up-sampled maps take the widths of the maps they are brought to (384 -> 256 -> 128).
    Size at 527 classes, Table 1's micro subnet (f_det and f_att one k = 3 convolution each,
    M = 384 heads), C = 527:

    * macro subnet: 3,716,625 at 17 classes + 510 x 1025 for the wider output layer
      = 4,239,375;
    * a micro subnet on K channels: (3K C + C) + (3K M + M) = 2,733 K + 911;
      K = 128, 256, 384, 256, 128: 350,735 + 700,559 + 1,050,383 + 700,559 + 350,735
      = 3,152,971;
    * up-sampling: 384 x 256 x 4 + 2 x 256 (BN) + 256 x 128 x 4 + 2 x 128 = 525,056;

    7,917,402 parameters in all, Table 4's "8M" (printed to one significant figure:
    7.5-8.5 M). Micro subnets on the block *outputs* before pooling instead (K = 256, 384,
    384, 384, 256 and up-sampling 384 -> 384 -> 256) give 9.78 M: 1.40 M more in the micro
    subnets and 0.46 M more in the up-sampling (our earlier layout, 1.86 M over Table 4).
    The authors' multi-scale code also gives f_att as many heads as the map has channels
    (M = K^(l), ``attention_heads="channels"``: 7.52 M at 527 classes); with one M = 384 for
    every subnet (eq. 5 has one m) the default keeps Table 1's subnet.

    Our documented choices: the up-sampling path has no lateral connections (002 mentions
    none); EP uses the mean of the five attention predictions; ``frame_probs`` is the mean of
    the five levels' d_t, each averaged down to X^(3)'s segments.
    """

    multi_scale = True


__all__ = [
    "MACRO_KINDS",
    "MICRO_LOSSES",
    "ConvStage",
    "MMNet",
    "MMNetMS",
    "MicroSubnet",
    "ResidualStage",
    "Upsample",
    "attention_prediction",
    "authors_micro_loss",
    "class_loss_weights",
    "classifier",
    "micro_loss",
    "multi_head_attention",
    "weighted_cross_entropy",
]
