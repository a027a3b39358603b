"""M&mnet and M&mnet-MS: macro (clip) supervision plus attentional micro (segment)
supervision (Chou, Jang, Yang, IJCAI 2018 -- paper 002).

* Macro subnet (002 §2.2, eq. 1-2): a feature-learning stack f_cnn of 1-D convolutions
  along time (002 footnote 2: the mel bins are the input channels, the feature map X is
  K x T), either a plain ConvNet or a ResNet (``macro="convnet"|"resnet"``), mean pooling
  over time and a fully connected classifier f_cls with a sigmoid.
* Micro subnet (002 §2.3, eq. 4-6): for every segment x_t of X a detector
  d_t = sigmoid(f_det(x_t)) and an M-head attention vector v_t = f_att(x_t); each head is
  normalised by a softmax over the T segments and the heads are summed into a_t.
* Loss (002 eq. 3, 7, 8): xi(y, y_hat) + lambda * sum_t a_t xi(y, d_t), lambda = 1, with
  optional per-class loss weights w_c (002 eq. 11, beta = 0.3;
  :func:`class_loss_weights`).
* Ensemble prediction EP (002 eq. 9): y_ens = mu * y_hat + (1 - mu) * sum_t alpha_t d_t,
  alpha = softmax_t(a_t), mu = 0.5. ``ensemble=False`` gives the "without EP" row of
  002 Table 1 (clip_probs = y_hat).
* M&mnet-MS (002 §2.5, eq. 10): a micro subnet on the output of every stage of f_cnn
  (X^(1..L)) and on L - 1 maps obtained by up-sampling X^(L) with transposed
  convolutions, 2L - 1 micro losses in all.

Segment length: the four stages each halve the time axis, so one segment covers 16
input frames: 16 x 512 / 44100 = 0.186 s with the "mmnet" front-end preset, the
0.18 s 002 §3 / Fig. 6 found best.

Choices where the paper is silent:

* Widths: stage channels (256, 256, 512, 512), kernel 3, max pooling by 2 after each
  stage. The ConvNet has one conv per stage (1.5 M parameters with 128 mel bins, 002
  Table 1: 1.54 M), the ResNet one two-conv residual block per stage with a 1x1
  projection shortcut where the width changes (3.6 M; Table 1: 3.70 M).
* f_cls is one linear layer; f_det and f_att are each two linear layers with a
  ``micro_hidden`` = 512 ReLU hidden layer (+0.54 M parameters; Table 1: +0.46 M).
  ``micro_hidden=None`` makes them single linear layers.
* ``attention_heads`` M = 4 (the paper does not give M).
* Input batch normalisation over the mel bins stands in for the training-set
  standardisation of 002 §2.7 (it learns the same statistics and needs no extra pass).
* xi is the cross entropy averaged (not summed) over classes, and the loss is averaged
  over the clips of a batch, as the package's default loss is; this scales eq. 8 by the
  constant 1/C and leaves the macro/micro balance lambda unchanged. eq. 3 prints y and
  y_hat swapped; the standard cross entropy is meant and used.
* The per-class weights w_c multiply every class term of both the macro and the micro
  losses. Proportions p_c are clipped to [0.5/N, 1 - 0.5/N] so a class with no (or
  only) positive examples gets a finite weight.
* Pooling uses ``ceil_mode=True``: any input length works (T' = ceil(T / 16)).
* M&mnet-MS: X^(l) is the output of stage l after its pooling; the up-sampling path is a
  cascade of L - 1 stride-2 transposed convolutions (kernel 2, + BN + ReLU) from X^(L),
  each producing the channels and (cropped) length of the stage below it, without
  lateral connections (002 mentions none). Its EP uses the mean of the 2L - 1 per-level
  attention predictions; its ``frame_probs`` are the mean of the 2L - 1 levels' d_t,
  each resized (nearest) to the finest resolution T^(1) = ceil(T / 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.audio.models.base import EPS, TaggingModel, TaggingOutput, register_model
from avtag.events import NUM_EVENTS

MACRO_KINDS = ("convnet", "resnet")


# --------------------------------------------------------------------------- equations


def class_loss_weights(targets: Tensor | np.ndarray, beta: float = 0.3) -> list[float]:
    """Per-class loss weights of 002 eq. 11 from a training-set label matrix (N, C).

    w_c = (p_bar / p_c * (1 - p_c) / (1 - p_bar)) ** beta, p_c = fraction of clips with
    class c, p_bar = mean of the p_c. Rare classes get weights above 1.
    """
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError("targets must be a non-empty (clips, classes) matrix")
    clips = labels.shape[0]
    proportions = labels.mean(dim=0).clamp(0.5 / clips, 1 - 0.5 / clips)
    mean_proportion = proportions.mean()
    weights = (mean_proportion / proportions * (1 - proportions) / (1 - mean_proportion)) ** beta
    return weights.tolist()


def weighted_cross_entropy(probs: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """xi(y, p) of 002 eq. 3, per example: class-weighted cross entropy averaged over the
    last (class) axis. ``probs`` (..., C), ``targets`` broadcastable to it; returns (...)."""
    probs = probs.float().clamp(EPS, 1 - EPS)
    targets = targets.float().expand_as(probs)
    per_class = F.binary_cross_entropy(probs, targets, reduction="none")
    if class_weights is not None:
        per_class = per_class * class_weights
    return per_class.mean(dim=-1)


def micro_loss(segment_probs: Tensor, attention: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """L_micro of 002 eq. 7: sum_t a_t xi(y, d_t), one value per clip.

    segment_probs: (B, T, C) d_t; attention: (B, T) a_t; targets: (B, C) clip labels.
    """
    per_segment = weighted_cross_entropy(segment_probs, targets.unsqueeze(1), class_weights)
    return (attention.float() * per_segment).sum(dim=1)


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


# --------------------------------------------------------------------------- layers


class ConvStage(nn.Module):
    """ConvNet stage: conv1d(k=3) + BN + ReLU, then max pooling by 2 along time."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool1d(F.relu(self.bn(self.conv(x))), 2, ceil_mode=True)


class ResidualStage(nn.Module):
    """ResNet stage: a two-conv residual block (He et al. 2016) along time, then max
    pooling by 2. A 1x1 conv + BN projects the shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, bias=False), nn.BatchNorm1d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))
        return F.max_pool1d(out, 2, ceil_mode=True)


def _mlp(in_features: int, hidden: int | None, out_features: int) -> nn.Module:
    if hidden is None:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


class MicroSubnet(nn.Module):
    """f_det and f_att of 002 eq. 4-6 on the segments of one feature map."""

    def __init__(self, in_channels: int, num_classes: int, heads: int, hidden: int | None) -> None:
        super().__init__()
        self.detector = _mlp(in_channels, hidden, num_classes)
        self.attention = _mlp(in_channels, hidden, heads)

    def forward(self, segments: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """segments (B, T, K) -> d_t (B, T, C), a_t (B, T), v_t (B, T, M)."""
        segment_probs = torch.sigmoid(self.detector(segments))  # eq. 4
        head_logits = self.attention(segments)  # eq. 5
        return segment_probs, multi_head_attention(head_logits), head_logits  # eq. 6


class Upsample(nn.Module):
    """Stride-2 transposed conv + BN + ReLU, cropped to a target length (002 §2.5)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, length: int) -> Tensor:
        return F.relu(self.bn(self.deconv(x)))[..., :length]


# --------------------------------------------------------------------------- models


@register_model("mmnet")
class MMNet(TaggingModel):
    """M&mnet (002 §2.2-2.4) over log-mel features (B, T, n_mels).

    Args:
        num_classes: output classes.
        n_mels: mel bins of the input (128 with the "mmnet" front-end preset).
        macro: ``"convnet"`` or ``"resnet"`` feature-learning stack f_cnn.
        channels: output channels of the stages (each halves the time axis).
        attention_heads: M, the attention heads of f_att (eq. 5-6).
        micro_hidden: hidden width of f_det/f_att, or None for single linear layers.
        micro_weight: lambda of eq. 8.
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
        channels: Sequence[int] = (256, 256, 512, 512),
        attention_heads: int = 4,
        micro_hidden: int | None = 512,
        micro_weight: float = 1.0,
        ensemble: bool = True,
        ensemble_mu: float = 0.5,
        class_weights: list[float] | str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(class_weights, str) and class_weights != "auto":
            raise ValueError(f"class_weights must be a list, 'auto' or None, got {class_weights!r}")
        if macro not in MACRO_KINDS:
            raise ValueError(f"macro must be one of {MACRO_KINDS}, got {macro!r}")
        if isinstance(class_weights, list | tuple) and len(class_weights) != num_classes:
            raise ValueError(f"class_weights needs {num_classes} entries, got {len(class_weights)}")
        if not 0.0 <= ensemble_mu <= 1.0:
            raise ValueError("ensemble_mu must lie in [0, 1]")
        channels = [int(c) for c in channels]
        self.micro_weight = micro_weight
        self.ensemble = ensemble
        self.ensemble_mu = ensemble_mu
        self.time_stride = 2 ** len(channels)
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
        widths = [n_mels, *channels]
        self.stages = nn.ModuleList(stage_type(widths[i], widths[i + 1]) for i in range(len(channels)))
        self.classifier = nn.Linear(channels[-1], num_classes)  # f_cls

        # Micro subnets: on X^(L) only, or (MS) on X^(1..L) and the L-1 up-sampled maps.
        if self.multi_scale:
            self.upsamplers = nn.ModuleList(
                Upsample(channels[level + 1], channels[level]) for level in reversed(range(len(channels) - 1))
            )
            micro_widths = channels + list(reversed(channels[:-1]))
        else:
            self.upsamplers = nn.ModuleList()
            micro_widths = channels[-1:]
        self.micro = nn.ModuleList(
            MicroSubnet(width, num_classes, attention_heads, micro_hidden) for width in micro_widths
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # He et al. init, 002 §2.7

    def feature_maps(self, features: Tensor) -> list[Tensor]:
        """X^(1), ..., X^(L) of 002 §2.5, each (B, K_l, T_l); the last is X of eq. 1."""
        x = self.input_norm(features.transpose(1, 2))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def micro_inputs(self, maps: list[Tensor]) -> list[Tensor]:
        """Feature maps that get a micro subnet: [X^(L)], or for MS the 2L - 1 maps
        X^(1..L) followed by the up-sampled maps at T^(L-1), ..., T^(1)."""
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
            probs, attention, head_logits = subnet(feature_map.transpose(1, 2))
            segment_probs.append(probs)
            attentions.append(attention)
            heads.append(head_logits)
            attention_preds.append(attention_prediction(probs, attention))
        attention_probs = torch.stack(attention_preds).mean(dim=0)

        if self.ensemble:  # eq. 9
            clip_probs = self.ensemble_mu * macro_probs + (1 - self.ensemble_mu) * attention_probs
        else:
            clip_probs = macro_probs

        finest = max(p.shape[1] for p in segment_probs)
        frame_probs = torch.stack(
            [F.interpolate(p.transpose(1, 2), size=finest, mode="nearest").transpose(1, 2) for p in segment_probs]
        ).mean(dim=0)
        attention_maps = {"segment": attentions[-1] if not self.multi_scale else attentions[len(self.stages) - 1]}
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
        )

    def fit_class_weights(self, targets: Tensor | np.ndarray, beta: float = 0.3) -> None:
        """Set the eq. 11 weights from the training label matrix (only with ``"auto"``)."""
        if self.auto_class_weights:
            weights = torch.tensor(class_loss_weights(targets, beta), dtype=torch.float32)
            self.class_weights.copy_(weights.to(self.class_weights.device))

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        """002 eq. 8 (eq. 10 for MS), averaged over the batch:
        xi(y, y_hat) + lambda * sum_levels sum_t a_t xi(y, d_t)."""
        extras = output.extras
        total = weighted_cross_entropy(extras["macro_probs"], targets, self.class_weights)
        for probs, attention in zip(extras["segment_probs"], extras["segment_attention"]):
            total = total + self.micro_weight * micro_loss(probs, attention, targets, self.class_weights)
        return total.mean()


@register_model("mmnet_ms")
class MMNetMS(MMNet):
    """M&mnet-MS (002 §2.5, eq. 10): micro subnets at every stage of f_cnn and on the
    L - 1 transposed-conv up-samplings of the last feature map. Same arguments as
    :class:`MMNet`."""

    multi_scale = True
