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
  per-class loss weights w_c (002 eq. 11, beta = 0.3; :func:`class_loss_weights`).
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
M&mnet-MS at 527 classes (Table 4: "8M"; ours 9.78 M): see :class:`MMNetMS`.

Segment length: 16 input frames x 492 / 44100 = 0.1785 s with the "mmnet" front-end
preset (hop 492, authors' code), the 0.18 s of 002 §3 / Fig. 6.

Class weights, eq. 11: ``w_c = (p_bar / p_c * (1 - p_c) / (1 - p_bar)) ** beta``. As in
the authors' ``mm_loss`` (``Trainer.py``), the weights multiply only the positive term of
the cross entropy, ``-(w_c y log p + (1 - y) log(1 - p))``, and ``p_c`` is class c's share
of all training labels. 002 does not say which terms are weighted; weighting both terms
(the literal reading of "per-class loss weights") would leave each class's optimal
constant prediction at its frequency (p = 0.01, w = 1.83: 0.0100), which cannot counter
the imbalance that eq. 11 is there for; positive-only weighting moves it to
w p / (w p + 1 - p) = 0.0181.

Two micro-loss forms (``micro_loss``):
- ``"paper"`` (default): eq. 7, ``sum_t a_t xi(y, d_t)`` with the attention a_t (which
  sums to M over the clip) differentiated.
- ``"authors"``: the authors' ``mm_loss``: each segment's positive terms weighted by
  ``w_c * a_t`` (a_t not differentiated: ``att_sc.data``), negative terms by 1, averaged
  over segments and classes (``configs/mmnet_authors.yaml``).

Choices where the paper is silent:

* The residual block is the post-activation He et al. block (conv-BN-ReLU-conv-BN plus
  the 1x1 conv-BN shortcut, ReLU after the sum); the authors' pre-activation ordering
  has the same parameter count.
* ``macro="convnet"`` (Table 1's ConvNet row): the same layout with one convolution per
  stage and no shortcut; Table 1's 1.54 M comes from a layout neither the paper nor the
  code gives, so this ConvNet has 2.3 M parameters.
* Input batch normalisation over the mel bins (the authors' ``self.bn``) after the
  training-set standardisation of 002 §2.7 (``feature_statistics_clips`` in the config).
* xi is the cross entropy averaged (not summed) over classes, and the loss is averaged
  over the clips of a batch; this scales eq. 8 by the constant 1/C and leaves the
  macro/micro balance lambda unchanged. eq. 3 prints y and y_hat swapped; the standard
  cross entropy is meant and used.
* Proportions p_c are clipped to [1e-6, 1 - 1e-6] so a class with no positive example
  gets a finite weight.
* Pooling uses ``ceil_mode=True``: any input length works (T' = ceil(T / 16)).
"""

from __future__ import annotations

import math
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


def _classifier(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Module:
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
        attention_heads: M, the attention heads of f_att (eq. 5-6).
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
        attention_heads: int = 384,
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
        self.classifier = _classifier(channels[-1], [int(w) for w in classifier_hidden], num_classes)  # f_cls

        # Micro subnets: on X^(L) only, or (MS) on X^(1..L) and the L-1 up-sampled maps.
        block_widths = channels[1:]
        if self.multi_scale:
            factors = pools[1:-1]  # the poolings between consecutive block outputs
            targets = list(reversed(block_widths[:-1]))
            sources = [block_widths[-1], *targets[:-1]]
            self.upsamplers = nn.ModuleList(
                Upsample(src, dst, factor) for src, dst, factor in zip(sources, targets, reversed(factors))
            )
            micro_widths = block_widths + targets
        else:
            self.upsamplers = nn.ModuleList()
            micro_widths = block_widths[-1:]
        self.micro = nn.ModuleList(
            MicroSubnet(width, num_classes, attention_heads, micro_hidden, micro_kernel) for width in micro_widths
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # He et al. init, 002 §2.7

    def feature_maps(self, features: Tensor) -> list[Tensor]:
        """X^(1), ..., X^(L) of 002 §2.5: the block outputs (before their pooling), each
        (B, K_l, T_l); the last one, pooled, is X of eq. 1."""
        x = self.input_norm(features.transpose(1, 2))
        x = F.max_pool1d(self.stem(x), self.pools[0], ceil_mode=True) if self.pools[0] > 1 else self.stem(x)
        maps = []
        for stage, pool in zip(self.stages, self.pools[1:]):
            x = stage(x)
            maps.append(x)
            if pool > 1:
                x = F.max_pool1d(x, pool, ceil_mode=True)
        maps[-1] = x
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
    """M&mnet-MS (002 §2.5, eq. 10): micro subnets on the L = 3 block outputs X^(1..3)
    of f_cnn (time strides 1, 4, 16) and on the L - 1 = 2 maps up-sampled from X^(3) by
    transposed convolutions (kernel = stride = 4) to the strides 4 and 1: five micro
    subnets, "12+10" layers (Table 4). Same arguments as :class:`MMNet`.

    Size: with Table 1's micro subnet (k = 3, M = 384) at each of the five maps it has
    9.78 M parameters at 527 classes (4.24 M macro, 4.55 M micro, 0.98 M up-sampling)
    against Table 4's "8M"; 002 gives no shape that would make the five subnets and the
    up-sampling smaller, so we keep Table 1's subnet and state the gap
    (``micro_kernel=1``, per-segment FC layers, gives 6.74 M).

    Our documented choices: X^(l) is taken before the pooling that follows block l; the
    up-sampling path has no lateral connections (002 mentions none); EP uses the mean of
    the five attention predictions; ``frame_probs`` is the mean of the five levels' d_t,
    each averaged down to X^(3)'s segments.
    """

    multi_scale = True
