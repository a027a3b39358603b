"""GL-AT: the global-local attention framework for weakly labelled audio tagging
(paper 003), as a wrapper around any registered backbone.

* Global stream (003 §2.1, eq. 1-2): a backbone model on the whole clip gives the clip
  scores y_g and, from its frame-wise output, the class-wise activation S_g (003 §2.2).
* Class-wise clip selection (003 §2.2): the N classes with the highest clip scores are
  taken; for each, the frame m with the highest activation is the centre of a window of
  tau seconds, [m - tau/2, m + tau/2]; a window running past the end becomes
  [T0 - tau, T0], one starting before 0 becomes [0, tau] (:func:`select_local_windows`).
* Local stream (003 §2.1): a second copy of the backbone (same architecture, its own
  weights) scores the N crops, cut from the input log-mel features, in one batched
  forward pass of shape (B*N, tau_frames, n_mels). The N local scores are aggregated by
  the global pooling function P of 003 §2.1 -- "both maximum and average operations":
  P(y_1..y_N) = (max_n y_n + mean_n y_n) / 2 (eq. 3). The sum of the two is halved so
  y_l stays a probability, as eq. 6 takes its logarithm and that of 1 - y_l (the
  authors' released code halves it too).
* Loss (003 eq. 4-6): L = L_g + L_l, cross entropy of the global and the local scores.
* Inference (003 §2.1): y = P(y_g, y_l), the same pooling over the two streams.
  ``inference_streams="global"|"local"`` reproduce the single-stream rows of 003 Table 2.

The paper's method (default) trains both streams from scratch with L = L_g + L_l. The
authors' released code (WangHelin1997/GL-AT ``pytorch/main.py``) trains something
else: the global stream is a PANNs checkpoint loaded once, kept in eval mode and never
optimised; only the local stream is trained, on the local loss alone; ``--length``
(tau) defaults to 2 s. That is the named variant ``configs/glat_cnn10_authors.yaml``:
``global_export`` (an avtag export or checkpoint of the backbone, e.g. a CNN10 trained
with ``configs/glat_cnn10.yaml``'s backbone alone), ``freeze_global: true``,
``loss_streams: local``, ``local_seconds: 2``, and ``local_from_global: true`` to start
the local stream from the same weights. 003's Table 1 gains were obtained this way, on
pretrained streams (PANNs' released AudioSet models): they are gains over a pretrained
global stream, not of two streams trained together from scratch. avtag ships no
pretrained audio model, so the variant needs an export the user trained.

Choices where the paper is silent:

* The activation peak m, found on the backbone's own frame resolution T', is mapped to
  the input frame at the centre of that segment, floor((m + 0.5) * T / T').
* tau is converted to frames with ``frames_per_second``; the default is that of the
  backbone's default front-end preset (``avtag.audio.features.PRESETS``): 200 for
  "crnn", 100 for "cnn" (CNN10, ResNet38), 40 for "sca", 44100/492 = 89.6 for "mmnet"; a window is
  round(tau * fps) frames, at most the clip length. A window of even length W centred
  on m starts at m - W // 2.
* L_g is the backbone's own ``loss`` on the global output: plain cross entropy (eq. 5)
  for CRNN/CNN10/SCA, and the backbone's paper loss for backbones that have one.
  L_l is the cross entropy of y_l (eq. 6). Both are averaged over clips and classes.
* Selection uses the global clip scores of the current forward pass (in training too,
  dropout included) and is not differentiated (top-k and argmax carry no gradient): the
  global stream's weights get gradients from L_g only, and the streams interact through
  the clips the global stream selects for the local one.
* The official code also blanks the activation around clips already chosen to spread
  them out; 003 does not describe this, so windows of different classes may overlap.
* N is capped at the number of classes.
* ``local_backbone_args`` lets a backbone whose layers depend on the input length
  (SCA's local spatial FC, 001 eq. 6) be built for the tau-second crops; the configs
  use it for SCA (``input_frames`` = 120: 3 s at the "sca" preset's 40 frames/s).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from avtag.audio.models.base import TaggingModel, TaggingOutput, binary_cross_entropy, build_model, get, register_model
from avtag.errors import CheckpointError

INFERENCE_STREAMS = ("both", "global", "local")
LOSS_STREAMS = ("both", "local")


def max_mean_pool(scores: Tensor, dim: int) -> Tensor:
    """P of 003 eq. 3: (max + mean) / 2 over ``dim``, a probability for probabilities."""
    return 0.5 * (scores.amax(dim=dim) + scores.mean(dim=dim))


def clamp_window_starts(centres: Tensor, window: int, total: int) -> Tensor:
    """First frame of each window of ``window`` frames centred on ``centres`` (003 §2.2).

    [m - w/2, m + w/2) becomes [0, w) when it starts before 0 and [T - w, T) when it
    ends after T. ``window`` must not exceed ``total``.
    """
    if window > total:
        raise ValueError(f"window of {window} frames exceeds the clip's {total}")
    starts = centres - window // 2
    starts = torch.where(starts < 0, torch.zeros_like(starts), starts)
    return torch.where(starts + window > total, torch.full_like(starts, total - window), starts)


def select_local_windows(
    clip_probs: Tensor, frame_probs: Tensor, num_frames: int, window: int, num_clips: int
) -> tuple[Tensor, Tensor]:
    """Class-wise attentional clip selection of 003 §2.2.

    clip_probs (B, C) global clip scores; frame_probs (B, T', C) S_g; ``num_frames`` T of
    the input; ``window`` frames per local clip. Returns (starts, classes), both (B, N):
    the first input frame of each local clip and the class that chose it.
    """
    segments = frame_probs.shape[1]
    classes = clip_probs.topk(num_clips, dim=1).indices  # top-N classes by clip score
    activations = frame_probs.gather(2, classes.unsqueeze(1).expand(-1, segments, -1))  # (B, T', N)
    peaks = activations.argmax(dim=1)  # m, on the backbone's resolution
    centres = torch.div((2 * peaks + 1) * num_frames, 2 * segments, rounding_mode="floor")
    return clamp_window_starts(centres, window, num_frames), classes


def crop_windows(features: Tensor, starts: Tensor, window: int) -> Tensor:
    """Cut ``window`` frames from ``features`` (B, T, F) at ``starts`` (B, N): returns the
    (B*N, window, F) batch of local clips, in one gather."""
    batch, clips = starts.shape
    offsets = torch.arange(window, device=starts.device)
    index = (starts.unsqueeze(-1) + offsets).reshape(batch, clips * window, 1)
    crops = features.gather(1, index.expand(-1, -1, features.shape[-1]))
    return crops.reshape(batch * clips, window, features.shape[-1])


def _preset_frames_per_second(frontend: str) -> float:
    from avtag.audio.features import PRESETS

    preset = PRESETS[frontend]
    return preset["sample_rate"] / preset["hop_length"]


@register_model("glat")
class GLAT(TaggingModel):
    """Two-stream GL-AT (003) around a registered backbone.

    Args:
        backbone: registered model name used for both streams ("crnn", "cnn10", "sca", ...).
        backbone_args: constructor arguments of the backbone (both streams).
        num_local_clips: N, local clips per input clip (003 §3.1: 5).
        local_seconds: tau, seconds per local clip (003 §3.1: 3 s).
        frames_per_second: input feature frames per second, to turn tau into frames;
            None = the backbone's default front-end preset.
        inference_streams: "both" (003: P(y_g, y_l)), "global" or "local" for
            ``clip_probs``.
        local_backbone_args: overrides of ``backbone_args`` for the local stream only, for
            arguments tied to the input length (e.g. SCA's ``input_frames``); the
            architecture stays the same.
        num_classes, n_mels: if given, passed to the backbone (the training module fills
            them from the class list and the front-end); they must agree with
            ``backbone_args`` where both give them.
        global_export: an avtag export directory or checkpoint of the backbone whose
            weights the global stream starts from (read once, at construction; not
            recorded in ``model_args``, the weights travel in the state dict).
        freeze_global: keep the global stream fixed (no gradients, BatchNorm in eval mode).
        loss_streams: "both" (003 eq. 4: L_g + L_l) or "local" (L_l only, authors' code).
        local_from_global: start the local stream from the global stream's weights
            (needs ``global_export``).
    """

    default_frontend = "crnn"

    def __init__(
        self,
        backbone: str = "crnn",
        backbone_args: dict[str, Any] | None = None,
        num_local_clips: int = 5,
        local_seconds: float = 3.0,
        frames_per_second: float | None = None,
        inference_streams: str = "both",
        local_backbone_args: dict[str, Any] | None = None,
        num_classes: int | None = None,
        n_mels: int | None = None,
        global_export: str | None = None,
        freeze_global: bool = False,
        loss_streams: str = "both",
        local_from_global: bool = False,
    ) -> None:
        super().__init__()
        if backbone == "glat":
            raise ValueError("GL-AT cannot wrap itself")
        if loss_streams not in LOSS_STREAMS:
            raise ValueError(f"loss_streams must be one of {LOSS_STREAMS}, got {loss_streams!r}")
        if local_from_global and global_export is None:
            raise ValueError("local_from_global needs global_export")
        if inference_streams not in INFERENCE_STREAMS:
            raise ValueError(f"inference_streams must be one of {INFERENCE_STREAMS}, got {inference_streams!r}")
        if num_local_clips < 1 or local_seconds <= 0:
            raise ValueError("num_local_clips must be >= 1 and local_seconds > 0")
        backbone_class = get(backbone)
        self.default_frontend = getattr(backbone_class, "default_frontend", "crnn")
        if frames_per_second is None:
            frames_per_second = _preset_frames_per_second(self.default_frontend)
        self.frames_per_second = float(frames_per_second)
        self.local_frames = max(1, round(local_seconds * self.frames_per_second))
        self.num_local_clips = num_local_clips
        self.inference_streams = inference_streams
        shared_args = dict(backbone_args or {})
        accepted = inspect.signature(backbone_class.__init__).parameters
        for key, value in (("num_classes", num_classes), ("n_mels", n_mels)):
            if value is None or key not in accepted:
                continue
            if key in shared_args and shared_args[key] != value:
                raise ValueError(f"{key}={value} disagrees with backbone_args {key}={shared_args[key]}")
            shared_args[key] = value
        self.global_stream = build_model(backbone, **shared_args)
        self.local_stream = build_model(backbone, **(shared_args | (local_backbone_args or {})))
        self.time_stride = self.global_stream.time_stride
        self.freeze_global = bool(freeze_global)
        self.loss_streams = loss_streams
        if global_export is not None:
            state = _backbone_state(global_export, backbone)
            _load(self.global_stream, state, global_export)
            if local_from_global:
                _load(self.local_stream, state, global_export)
        if self.freeze_global:
            self.global_stream.requires_grad_(False)
            self.global_stream.eval()

    def recorded_args(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``global_export`` is read once; rebuilt models take its weights from the state dict."""
        return arguments | {"global_export": None, "local_from_global": False}

    def train(self, mode: bool = True) -> GLAT:
        """A frozen global stream stays in eval mode (fixed BatchNorm statistics, no dropout)."""
        super().train(mode)
        if self.freeze_global:
            self.global_stream.eval()
        return self

    def forward(self, features: Tensor) -> TaggingOutput:
        batch, frames, _ = features.shape
        global_output = self.global_stream(features)
        if global_output.frame_probs is None:
            raise ValueError(f"backbone {self.global_stream.model_name!r} has no frame-wise output for GL-AT")
        global_probs = global_output.clip_probs
        num_clips = min(self.num_local_clips, global_probs.shape[1])
        window = min(self.local_frames, frames)
        with torch.no_grad():
            starts, classes = select_local_windows(
                global_probs.detach(), global_output.frame_probs.detach(), frames, window, num_clips
            )
        crops = crop_windows(features, starts, window)
        local_output = self.local_stream(crops)  # one batched pass over B*N clips
        local_probs = local_output.clip_probs.reshape(batch, num_clips, -1)
        local_clip_probs = max_mean_pool(local_probs, dim=1)  # eq. 3

        if self.inference_streams == "global":
            clip_probs = global_probs
        elif self.inference_streams == "local":
            clip_probs = local_clip_probs
        else:
            clip_probs = max_mean_pool(torch.stack([global_probs, local_clip_probs], dim=1), dim=1)
        attention = {f"global/{name}": value for name, value in global_output.attention.items()}
        return TaggingOutput(
            frame_stride=global_output.frame_stride,
            clip_probs=clip_probs,
            frame_probs=global_output.frame_probs,
            attention=attention,
            extras={
                "global_output": global_output,
                "global_probs": global_probs,
                "local_probs": local_probs,
                "local_clip_probs": local_clip_probs,
                "local_starts": starts,
                "local_classes": classes,
                "local_frames": window,
            },
        )

    def loss(self, output: TaggingOutput, targets: Tensor) -> Tensor:
        """003 eq. 4: L_g (eq. 5, the backbone's loss) + L_l (eq. 6); L_l alone with
        ``loss_streams="local"`` (authors' code)."""
        local_loss = binary_cross_entropy(output.extras["local_clip_probs"], targets)
        if self.loss_streams == "local":
            return local_loss
        global_loss = self.global_stream.loss(output.extras["global_output"], targets)
        return global_loss + local_loss


def _backbone_state(source: str, backbone: str) -> dict[str, Tensor]:
    """The model weights of an avtag export/checkpoint of ``backbone`` (a one-line
    :class:`CheckpointError` for a missing file or another model)."""
    from avtag.audio.tagger import read_checkpoint  # the tagger imports the model registry

    config, state = read_checkpoint(source)
    if config.get("model_name") != backbone:
        raise CheckpointError(
            f"global_export holds model {config.get('model_name')!r}, the GL-AT backbone is {backbone!r}", source
        )
    return {key[len("model."):]: value for key, value in state.items() if key.startswith("model.")}


def _load(stream: TaggingModel, state: dict[str, Tensor], source: str) -> None:
    try:
        stream.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"global_export does not fit the backbone_args ({first})", source) from None
