"""Multi-level fusion based class-aware attention with weight sharing (paper 000:
Yin et al., ACM MM 2019), plus the seed ensemble of its §3.4.

Pieces, in the paper's words:

* **Class-aware attention** (§3.2, eq. 1–2): ``s_i = sigmoid(W_att h_i + b_att)`` per
  segment ``i`` and class, L1-normalised over the segments of the clip,
  ``alpha_ic = s_ic / sum_i s_ic``. Attention sees one segment at a time (FC only).
* **Classifier** (§3.2): a single-layer bidirectional GRU over the segments followed by
  an FC layer with sigmoid gives segment predictions ``p_i``.
* **Temporal fusion** (eq. 3): ``y_hat = sum_i alpha_i * p_i`` (element-wise).
* **Multi-level fusion** (§3.3, Fig. 3–4, eq. 5): ``h^0`` is transformed ``K`` times by
  FC -> ELU -> BatchNorm -> Dropout(0.5) (Fig. 4, §3.4) into ``H = {h^1..h^K}``; every
  level gets its own attention-weighted clip prediction ``y_hat^k``; the loss is
  ``L_m = 1/K sum_k xi(y, y_hat^k)`` and the prediction ``y_hat = 1/K sum_k y_hat^k``.
* **Weight sharing** (§3.3): the attention sub-network and the GRU cells are shared by
  all levels; the FC layer after the GRU stays level-specific. ``share_weights=False``
  gives the "w/o weight sharing" model of Tables 3–5.
* **Single-level model** (§4.2, Table 1): ``multi_level=False`` supervises only the
  final feature ``h^K`` (``depth=0`` is the plain §3.2 model on ``h^0``).

Two feature encoders give ``h^0`` (§3.4 and §4.3):

* ``"multilevel_embeddings"`` — the AudioSet setting. Input is NOT log-mel: it is the
  ``(batch, segments, 128)`` float tensor of AudioSet's released VGGish-style 128-d
  embeddings, one per 0.96-s segment (10 per 10-s clip), already de-quantised to
  floats by the data pipeline. ``h^0`` = the embeddings; FC 1024, GRU 256.
* ``"multilevel"`` — the DCASE17 setting: the gated CNN of Xu et al. (paper 000 ref.
  [33]) on log-mel, trained end to end; ``h^0`` = the 256-d input of Xu's RNN;
  FC 256, GRU 128.

Gated CNN (Xu et al. [33], as described there and in their DCASE 2017 system):
four stages of two gated 3x3 convolutions (each: conv to ``2c`` channels without bias
-> BatchNorm -> gated linear unit ``a * sigmoid(b)``, ``c = 64``) followed by max
pooling, then a 3x3 convolution to 256 channels with ReLU and max pooling over the
remaining frequency bins, giving one 256-d vector per segment.

Choices where the paper is silent:

* Depth ``K`` for DCASE17 is not given; both encoders default to ``depth=5``, the depth
  of the paper's headline AudioSet results (Tables 1–5, 7).
* Segment length for the gated CNN: Xu et al. pool time by 2, 2, 2, 1 (/8) at 24
  frames/s, 30 segments of 0.332 s per 10-s clip (authors' code, yongxuUSTC/
  dcase2017_task4_cvssp ``main_crnn_at.py``); with Xu's front-end (preset ``"xu"``:
  16 kHz, hop 664, 240 frames per 10 s, the paper config) that is the default. With the
  ``"cnn"`` front-end (100 frames/s) ``time_pools: [4, 4, 2, 1]`` (/32) gives 32
  segments of 0.32 s. Frequency is pooled by 2 in every stage (64 mel -> 4), then
  max-pooled to 1 as in Xu. The segment hop is the pooling stride (``frame_stride``).
* ``xi`` of eq. 4 sums over classes; avtag's BCE averages over classes and clips (the
  same minimiser, and Adam is insensitive to the constant factor), so losses are
  comparable across avtag models.
* Eq. 2 divides by ``max(sum_i s_ic, 1e-7)`` so that a clip where every sigmoid
  underflows to 0 gives ``alpha = 0`` instead of NaN.
* BatchNorm in Fig. 4 normalises each feature over the batch and all segments.
* ``frame_probs`` = the mean over levels of the segment predictions ``p^k``;
  ``attention["time"]`` = the mean over levels of ``alpha^k`` (still sums to 1 over
  time); per-level tensors are in ``extras``.
* Seed ensemble (§3.4): the paper averages the scores of five models trained with
  different seeds; :class:`SeedEnsemble` averages clip probabilities, frame
  probabilities and attention maps of any N avtag models (arithmetic mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtag.audio.models.base import (
    TaggingModel,
    TaggingOutput,
    binary_cross_entropy,
    build_model,
    register_model,
    strip_prefixes,
)
from avtag.events import NUM_EVENTS

NORMALISER_FLOOR = 1e-7


# --------------------------------------------------------------------------- pieces


class ClassAwareAttention(nn.Module):
    """Eq. 1–2: per-segment, per-class importance, L1-normalised over segments."""

    def __init__(self, input_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_dim, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        """``h`` (batch, segments, dim) -> ``alpha`` (batch, segments, classes)."""
        scores = torch.sigmoid(self.fc(h))  # eq. 1, in (0, 1)
        return scores / scores.sum(dim=1, keepdim=True).clamp_min(NORMALISER_FLOOR)  # eq. 2


class TransformationLayer(nn.Module):
    """Fig. 4: ``h^k -> h^{k+1}`` = FC -> ELU -> BatchNorm -> Dropout."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc = nn.Linear(input_dim, hidden_dim)
        self.norm = nn.BatchNorm1d(hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        x = F.elu(self.fc(h))
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.dropout(x)


class MultiLevelAttentionHead(nn.Module):
    """§3.3: transformations ``h^0 -> h^1..h^K``, then per-level class-aware attention,
    BiGRU + level-specific FC classifier and attention-weighted fusion (eq. 3).

    Returns per-level tensors stacked on dim 1: clip ``(B, L, C)``, segment
    predictions and attention ``(B, L, M, C)``, where ``L = K`` levels (multi-level)
    or 1 (single-level).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        depth: int,
        hidden_dim: int,
        gru_hidden: int,
        share_weights: bool = True,
        multi_level: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if depth < 0 or (multi_level and depth < 1):
            raise ValueError(f"depth must be >= 1 for the multi-level model (>= 0 single-level), got {depth}")
        self.multi_level = multi_level
        self.share_weights = share_weights
        self.transforms = nn.ModuleList(
            TransformationLayer(input_dim if k == 0 else hidden_dim, hidden_dim, dropout) for k in range(depth)
        )
        level_dim = hidden_dim if depth > 0 else input_dim
        self.num_levels = depth if multi_level else 1
        # Shared: one attention FC and one GRU for all levels (§3.3); else one per level.
        num_shared = 1 if share_weights else self.num_levels
        self.attention = nn.ModuleList(ClassAwareAttention(level_dim, num_classes) for _ in range(num_shared))
        self.gru = nn.ModuleList(
            nn.GRU(level_dim, gru_hidden, num_layers=1, batch_first=True, bidirectional=True)
            for _ in range(num_shared)
        )
        # The FC after the GRU is always level-specific.
        self.classifiers = nn.ModuleList(nn.Linear(2 * gru_hidden, num_classes) for _ in range(self.num_levels))

    def levels(self, h0: Tensor) -> list[Tensor]:
        """The features that are supervised: ``H = {h^1..h^K}`` or ``[h^K]``."""
        features, h = [], h0
        for transform in self.transforms:
            h = transform(h)
            features.append(h)
        if not self.multi_level:
            return [h]
        return features

    def forward(self, h0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.levels(h0)
        batch = h0.shape[0]
        if self.share_weights:
            # One pass of the shared attention and GRU over all levels stacked in the batch.
            stacked = torch.cat(features, dim=0)  # (L*B, M, D)
            alphas = self.attention[0](stacked).split(batch, dim=0)
            recurrent = self.gru[0](stacked)[0].split(batch, dim=0)
        else:
            alphas = [att(h) for att, h in zip(self.attention, features)]
            recurrent = [gru(h)[0] for gru, h in zip(self.gru, features)]
        segment_probs = [torch.sigmoid(fc(r)) for fc, r in zip(self.classifiers, recurrent)]
        clip = [(a * p).sum(dim=1) for a, p in zip(alphas, segment_probs)]  # eq. 3
        return torch.stack(clip, dim=1), torch.stack(segment_probs, dim=1), torch.stack(alphas, dim=1)


def _multilevel_output(
    level_clip: Tensor, level_segments: Tensor, level_alpha: Tensor, frame_stride: int
) -> TaggingOutput:
    """Eq. 5 fusion: the prediction is the mean of the per-level clip predictions."""
    return TaggingOutput(
        frame_stride=frame_stride,
        clip_probs=level_clip.mean(dim=1),
        frame_probs=level_segments.mean(dim=1),
        attention={"time": level_alpha.mean(dim=1)},
        extras={
            "level_clip_probs": level_clip,
            "level_frame_probs": level_segments,
            "level_attention": level_alpha,
        },
    )


def multilevel_loss(output: TaggingOutput, targets: Tensor) -> Tensor:
    """Eq. 5: ``L_m = 1/K sum_k xi(y, y_hat^k)`` — the mean of the per-level losses,
    not the loss of the averaged prediction."""
    level_clip = output.extras["level_clip_probs"]
    losses = [binary_cross_entropy(level_clip[:, k], targets) for k in range(level_clip.shape[1])]
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------- encoders


class GatedConv2d(nn.Module):
    """Gated linear unit convolution (Xu et al. [33]): ``conv -> BN -> a * sigmoid(b)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(2 * out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(self.norm(self.conv(x)), dim=1)


class GatedCNNEncoder(nn.Module):
    """Xu et al.'s gated CNN: log-mel (B, T, F) -> segment embeddings ``h^0`` (B, T', out_dim)."""

    def __init__(self, channels: int = 64, out_dim: int = 256, time_pools: Sequence[int] = (2, 2, 2, 1)) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_channels = 1
        for time_pool in time_pools:
            stages += [
                GatedConv2d(in_channels, channels),
                GatedConv2d(channels, channels),
                nn.MaxPool2d((time_pool, 2), ceil_mode=True),
            ]
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.out_conv = nn.Conv2d(in_channels, out_dim, kernel_size=3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        x = self.stages(features.unsqueeze(1))  # (B, c, T', F')
        x = F.relu(self.out_conv(x))
        return x.amax(dim=3).transpose(1, 2)  # max over the remaining frequency bins


# --------------------------------------------------------------------------- models


@register_model("multilevel")
class MultiLevelAttention(TaggingModel):
    """Paper 000, DCASE17 setting: gated CNN on log-mel -> multi-level class-aware
    attention. Input ``(batch, frames, n_mels)`` log-mel."""

    default_frontend = "xu"

    def __init__(
        self,
        num_classes: int = NUM_EVENTS,
        depth: int = 5,
        hidden_dim: int = 256,
        gru_hidden: int = 128,
        share_weights: bool = True,
        multi_level: bool = True,
        dropout: float = 0.5,
        encoder_channels: int = 64,
        encoder_dim: int = 256,
        time_pools: list[int] = [2, 2, 2, 1],  # noqa: B006 - recorded as JSON, never mutated
    ) -> None:
        super().__init__()
        self.time_stride = math.prod(time_pools)
        self.encoder = GatedCNNEncoder(encoder_channels, encoder_dim, time_pools)
        self.head = MultiLevelAttentionHead(
            encoder_dim, num_classes, depth, hidden_dim, gru_hidden, share_weights, multi_level, dropout
        )

    def forward(self, features: Tensor) -> TaggingOutput:
        return _multilevel_output(*self.head(self.encoder(features)), self.time_stride)

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        return multilevel_loss(output, targets)


@register_model("multilevel_embeddings")
class MultiLevelAttentionEmbeddings(TaggingModel):
    """Paper 000, AudioSet setting. Input is ``(batch, segments, embedding_dim)``
    precomputed 128-d AudioSet embeddings (10 per 10-s clip, floats), not log-mel."""

    default_frontend = None  # needs an embedding extractor, not a log-mel front-end

    def __init__(
        self,
        num_classes: int = NUM_EVENTS,
        embedding_dim: int = 128,
        depth: int = 5,
        hidden_dim: int = 1024,
        gru_hidden: int = 256,
        share_weights: bool = True,
        multi_level: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.head = MultiLevelAttentionHead(
            embedding_dim, num_classes, depth, hidden_dim, gru_hidden, share_weights, multi_level, dropout
        )

    def forward(self, features: Tensor) -> TaggingOutput:
        if features.ndim != 3 or features.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"expected (batch, segments, {self.embedding_dim}) embeddings, got {tuple(features.shape)}"
            )
        return _multilevel_output(*self.head(features), self.time_stride)

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        return multilevel_loss(output, targets)


# --------------------------------------------------------------------------- ensembles


def average_outputs(outputs: Sequence[TaggingOutput]) -> TaggingOutput:
    """§3.4 network ensemble: the arithmetic mean of clip and frame probabilities (and
    of attention maps present in every output) of models run on the same input."""
    if not outputs:
        raise ValueError("average_outputs needs at least one output")
    clip = torch.stack([o.clip_probs for o in outputs]).mean(dim=0)
    frames = [o.frame_probs for o in outputs]
    if any(f is None for f in frames):
        frame_probs = None
    elif len({f.shape for f in frames}) != 1:
        raise ValueError(f"members disagree on frame_probs shapes: {sorted({tuple(f.shape) for f in frames})}")
    else:
        frame_probs = torch.stack(frames).mean(dim=0)
    attention = {}
    for key in outputs[0].attention:
        maps = [o.attention.get(key) for o in outputs]
        if all(m is not None and m.shape == maps[0].shape for m in maps):
            attention[key] = torch.stack(maps).mean(dim=0)
    return TaggingOutput(
        clip, frame_probs, attention, {"member_outputs": list(outputs)}, outputs[0].frame_hop, outputs[0].frame_stride
    )


@register_model("seed_ensemble")
class SeedEnsemble(TaggingModel):
    """N models (usually one architecture trained with N seeds) whose outputs are
    averaged (paper 000 §3.4, five seeds). ``members`` lists each member's
    ``{"model_name", "model_args"}``; weights live under ``members.<i>.``.
    ``default_frontend`` is the first member's.
    """

    default_frontend: str | None = None

    def __init__(self, members: list[dict[str, Any]]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a SeedEnsemble needs at least one member")
        self.members = nn.ModuleList(build_model(m["model_name"], **m["model_args"]) for m in members)
        self.default_frontend = getattr(self.members[0], "default_frontend", None)
        self.time_stride = self.members[0].time_stride

    @classmethod
    def from_models(cls, models: Sequence[TaggingModel]) -> SeedEnsemble:
        """Wrap trained models (weights are copied)."""
        ensemble = cls([{"model_name": m.model_name, "model_args": dict(m.model_args)} for m in models])
        for target, source in zip(ensemble.members, models):
            target.load_state_dict(strip_prefixes(source.state_dict()))
        return ensemble

    def forward(self, features: Tensor) -> TaggingOutput:
        return average_outputs([member(features) for member in self.members])

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        """Each member keeps its own objective; the ensemble loss is their mean."""
        members = output.extras["member_outputs"]
        return torch.stack([m.loss(o, targets) for m, o in zip(self.members, members)]).mean()
