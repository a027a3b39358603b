"""Per-frame features for key-frame selection (004 §2.2.1) and their distance matrix.

004 computes DS3's dissimilarities from AlexNet "conv5" activations (:class:`AlexNetConv5`,
weights from a local file); any :class:`FrameFeatureExtractor` or precomputed features can be
used instead (the embedded video branch reuses the pooled features of its recognition pass).

Our documented choice: AlexNet "conv5" = output of the fifth convolution after its ReLU and
before the last max-pool (torchvision's ``features[:12]``, 256×13×13 at 224×224 input); whole
frames are resized to 224×224 (no crop, so the borders count) and normalised with ImageNet
statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from avtag.errors import CheckpointError


@runtime_checkable
class FrameFeatureExtractor(Protocol):
    """Maps uint8 RGB frames (N, H, W, 3) to one feature vector per frame (N, D)."""

    def __call__(self, frames: np.ndarray) -> np.ndarray | Tensor: ...


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AlexNetConv5(nn.Module):
    """AlexNet "conv5" features (004 §2.2.1) from weights in a local file, never downloaded.

    ``weights_path`` holds a torchvision-layout AlexNet state dict (``features.*`` keys, with or
    without ``classifier.*``) as a ``.pth``/``.pt`` (read with ``weights_only=True``) or
    ``.safetensors`` file. Output: (N, 256·13·13) flattened conv5+ReLU maps.
    """

    def __init__(
        self,
        weights_path: str | Path,
        device: str | torch.device = "cpu",
        input_size: int = 224,
        batch_size: int = 32,
    ):
        super().__init__()
        from torchvision.models import alexnet

        self.features = alexnet(weights=None).features[:12]  # conv1 ... conv5 + ReLU
        self.input_size = input_size
        self.batch_size = batch_size
        self.features.load_state_dict(_read_alexnet_features(Path(weights_path)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.to(device).eval()

    @torch.inference_mode()
    def forward(self, frames: np.ndarray | Tensor) -> Tensor:
        device = self.mean.device
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (N, H, W, 3), got {tuple(frames.shape)}")
        outputs = []
        for start in range(0, frames.shape[0], self.batch_size):
            batch = frames[start : start + self.batch_size].to(device)
            x = batch.permute(0, 3, 1, 2).float().div_(255.0)
            x = nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                antialias=True, align_corners=False,
            )
            x = (x - self.mean) / self.std
            outputs.append(self.features(x).flatten(1))
        if not outputs:
            return torch.zeros(0, 256 * 13 * 13, device=device)
        return torch.cat(outputs)


def _read_alexnet_features(path: Path) -> dict[str, Tensor]:
    """The ``features.*`` tensors of an AlexNet state dict, keys relative to ``features``."""
    if not path.is_file():
        raise CheckpointError("AlexNet weights file not found (supply a local file; "
                              "avtag never downloads weights)", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the file is not usable weights
        raise CheckpointError(f"cannot read AlexNet weights ({type(err).__name__})", path) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError("AlexNet weights file does not hold a state dict", path)
    features = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("features."):
            features[key.removeprefix("features.")] = value
    expected = {f"{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    if set(features) != expected:
        missing = sorted(expected - set(features))
        raise CheckpointError(f"not an AlexNet state dict (missing features.{missing[:2]})"
                              if missing else "not an AlexNet state dict (unexpected keys)", path)
    return features


def pairwise_distances(features: np.ndarray | Tensor) -> Tensor:
    """Euclidean distance matrix (n, n) (or (B, n, n)) between feature rows, zero diagonal."""
    x = torch.as_tensor(features)
    if not x.is_floating_point():
        x = x.float()
    dist = torch.cdist(x, x).clamp_min_(0.0)
    dist.diagonal(dim1=-2, dim2=-1).zero_()
    return dist

