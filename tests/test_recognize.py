"""Recognizers (embedded EfficientNet-Lite0, Inception-v4 loading) and the rectification of
004 §2.2.2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avtag.errors import CheckpointError
from avtag.video.recognize import (
    _load_by_position,
    clip_objects,
    imagenet_class_names,
    load_recognizer,
    rectify,
)
from conftest import shared_path

# ------------------------------------------------------------------------ rectification


def test_rectify_keeps_top_k_and_renormalises():
    probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
    out = rectify(probs, top_k=2)
    np.testing.assert_allclose(out, [0, 0.5 / 0.7, 0, 0.2 / 0.7, 0])
    # rows are independent; top_k >= C only renormalises
    batch = np.array([[1.0, 2.0, 1.0], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(rectify(batch, top_k=5), batch / batch.sum(1, keepdims=True))


def test_rectify_breaks_ties_by_class_index():
    out = rectify(np.array([0.25, 0.25, 0.25, 0.25]), top_k=2)
    np.testing.assert_allclose(out, [0.5, 0.5, 0, 0])


def test_clip_objects_sums_rectified_keyframes_and_rectifies_again():
    keyframes = np.array(
        [
            [0.6, 0.3, 0.1, 0.0, 0.0],  # top-2: {0: 2/3, 1: 1/3}
            [0.0, 0.1, 0.0, 0.5, 0.4],  # top-2: {3: 5/9, 4: 4/9}
            [0.1, 0.0, 0.0, 0.8, 0.1],  # top-2: {3: 8/9, 0: 1/9} (tie 0/4 -> index 0)
        ]
    )
    indices, probs = clip_objects(keyframes, top_k=2)
    summed = np.array([2 / 3 + 1 / 9, 1 / 3, 0, 5 / 9 + 8 / 9, 4 / 9])
    # top-2 of the sum: class 3 (13/9) then class 0 (7/9)
    assert indices.tolist() == [3, 0]
    np.testing.assert_allclose(probs, [summed[3], summed[0]] / (summed[3] + summed[0]))
    assert probs.sum() == pytest.approx(1.0)


def test_clip_objects_paper_setting_gives_ten_objects():
    rng = np.random.default_rng(0)
    keyframes = rng.dirichlet(np.ones(1000), size=4)
    indices, probs = clip_objects(keyframes)
    assert len(indices) == len(set(indices.tolist())) == 10
    assert np.all(np.diff(probs) <= 0) and probs.sum() == pytest.approx(1.0)


def test_rectify_rejects_bad_input():
    with pytest.raises(ValueError):
        rectify(np.zeros(5), top_k=2)
    with pytest.raises(ValueError):
        rectify(np.ones(5), top_k=0)
    with pytest.raises(ValueError):
        clip_objects(np.ones(5))


# ------------------------------------------------------------------------ weight loading


def _tiny():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_load_by_position_maps_foreign_names_one_to_one(tmp_path):
    source = _tiny()
    state = source.state_dict()
    foreign = {f"_layer{i}.{k.split('.')[-1]}": v for i, (k, v) in enumerate(state.items())}
    target = _tiny()
    _load_by_position(target, foreign, tmp_path / "w.pth")
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)


def test_load_by_position_fails_loudly_on_mismatch(tmp_path):
    state = list(_tiny().state_dict().values())
    wrong_shape = {f"t{i}": v for i, v in enumerate(state)}
    wrong_shape["t2"] = torch.zeros(5, 4)
    with pytest.raises(CheckpointError, match="does not match") as err:
        _load_by_position(_tiny(), wrong_shape, tmp_path / "w.pth")
    assert "\n" not in str(err.value) and "w.pth" in str(err.value)
    with pytest.raises(CheckpointError, match="3 tensors"):
        _load_by_position(_tiny(), dict(zip("abc", state[:3])), tmp_path / "w.pth")


def test_inception_without_weights_is_one_line_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError) as err:
        load_recognizer("inception_v4")
    message = str(err.value)
    assert "\n" not in message
    assert "weights_path" in message and "timm/inception_v4.tf_in1k" in message
    with pytest.raises(CheckpointError, match="not found"):
        load_recognizer("inception_v4", weights_path=str(tmp_path / "missing.safetensors"))


def test_inception_loads_timm_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    with torch.device("meta"):  # shapes only: no time spent initialising a throwaway model
        shapes = {k: v.shape for k, v in timm.create_model("inception_v4").state_dict().items()}
    state = {k: torch.zeros(shape) for k, shape in shapes.items()}
    state["last_linear.bias"] = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "inception_v4.safetensors"
    save_file(state, str(path))
    recognizer = load_recognizer("inception_v4", weights_path=str(path), device="cpu")
    try:
        assert recognizer.input_size == 299  # timm's pretrained cfg
        assert recognizer.num_features == 1536
        assert torch.equal(recognizer.model.model.last_linear.bias, state["last_linear.bias"])
    finally:
        load_recognizer.cache_clear()  # free the 170 MB model


# ------------------------------------------------------------------------ embedded recognizer


@pytest.fixture(scope="module")
def lite0():
    return load_recognizer("efficientnet_lite0", device="cpu")


def _top5(recognizer, image: np.ndarray) -> list[str]:
    probs = recognizer(image[None]).probs[0]
    return [recognizer.class_names[i] for i in np.argsort(-probs)[:5]]


def test_class_names_are_imagenet_descriptions():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[407] == "ambulance" and names[670] == "motor scooter, scooter"


def test_embedded_recognizer_gets_obvious_photos_right(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    from sklearn.datasets import load_sample_image

    assert "espresso" in _top5(lite0, skimage_data.coffee())[:1]
    cat_top3 = _top5(lite0, skimage_data.chelsea())[:3]
    assert any("cat" in name or "tabby" in name for name in cat_top3)
    assert "palace" in _top5(lite0, load_sample_image("china.jpg"))
    assert "daisy" in _top5(lite0, load_sample_image("flower.jpg"))


def test_one_pass_gives_features_and_the_models_own_probabilities(lite0):
    from sklearn.datasets import load_sample_image

    frames = np.stack([load_sample_image("china.jpg"), load_sample_image("flower.jpg")])
    out = lite0(frames)
    assert out.probs.shape == (2, 1000) and out.features.shape == (2, 1280)
    np.testing.assert_allclose(out.probs.sum(1), 1.0, rtol=1e-5)
    with torch.inference_mode():
        reference = lite0.model(lite0.preprocess(frames)).softmax(-1).numpy()
    np.testing.assert_allclose(out.probs, reference, atol=1e-5)
    with pytest.raises(ValueError):
        lite0(frames.astype(np.float32))


def test_embedded_recognizer_sees_motorcycles_in_a_real_video(lite0):
    from avtag.video.decode import decode_video

    path = shared_path("data", "videos", "motorcycle.mp4")
    video = decode_video(path, num_frames=4, with_audio=False)
    probs = lite0(video.frames).probs
    two_wheelers = {lite0.class_names.index(n) for n in ("moped", "motor scooter, scooter")}
    hits = [bool(two_wheelers & set(np.argsort(-p)[:5].tolist())) for p in probs]
    assert sum(hits) >= 2


# ------------------------------------------------------------------------ EfficientNet-Lite0 without timm


def _video_frames(n: int = 6) -> np.ndarray:
    from avtag.video.decode import decode_video

    return decode_video(shared_path("data", "videos", "v_ZNVhz7ctTq0.mp4"), num_frames=n,
                        with_audio=False).frames


def test_lite0_module_equals_timms_model_on_the_same_weights(lite0):
    """9 Speed 1: avtag's own EfficientNet-Lite0 gives timm's tf_efficientnet_lite0 outputs."""
    import timm
    from timm.data import resolve_data_config
    from torchvision.transforms import v2

    from avtag.video.efficientnet_lite import DATA_CONFIG, EfficientNetLite0
    from avtag.video.recognize import _read_state_dict, embedded_efficientnet_weights

    assert isinstance(lite0.model, EfficientNetLite0)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    path = embedded_efficientnet_weights()
    _load_by_position(reference, _read_state_dict(path), path)  # timm's names: by position
    cfg = resolve_data_config({}, model=reference)
    assert {k: cfg[k] for k in DATA_CONFIG} == {k: v for k, v in DATA_CONFIG.items()}
    frames = _video_frames()
    timm_pipeline = v2.Compose([v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC,
                                          antialias=True), v2.CenterCrop(224),
                                v2.ToDtype(torch.float32, scale=True),
                                v2.Normalize(cfg["mean"], cfg["std"])])
    x_ref = timm_pipeline(torch.from_numpy(frames).permute(0, 3, 1, 2))
    x = lite0.preprocess(frames)
    assert float((x - x_ref).abs().max()) < 1e-5  # the same pixels, without torchvision
    with torch.inference_mode():
        pooled_ref = reference.forward_head(reference.forward_features(x_ref), pre_logits=True)
        probs_ref = reference.get_classifier()(pooled_ref).softmax(-1).numpy()
    out = lite0(frames)
    np.testing.assert_allclose(out.features, pooled_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.probs, probs_ref, atol=1e-5)


def test_lite0_loads_the_packaged_file_strictly_by_name(tmp_path):
    from avtag.video.efficientnet_lite import EfficientNetLite0
    from avtag.video.recognize import _read_state_dict, embedded_efficientnet_weights

    state = _read_state_dict(embedded_efficientnet_weights())
    model = EfficientNetLite0()
    assert list(state) == list(model.state_dict())  # the file's own names, every tensor
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # EfficientNet-Lite0: 4.65 M
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert all(tuple(state[k].shape) == shape for k, shape in shapes.items())
    broken = dict(state)
    broken["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)  # is 5 x 5
    torch.save(broken, tmp_path / "wrong-shape.pth")
    del broken["_fc.bias"]
    torch.save(broken, tmp_path / "missing.pth")
    for name in ("wrong-shape.pth", "missing.pth"):
        with pytest.raises(CheckpointError) as err:
            load_recognizer("efficientnet_lite0", weights_path=str(tmp_path / name))
        assert name in str(err.value) and "\n" not in str(err.value)


def test_the_embedded_recognizer_imports_no_timm_nor_torchvision():
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    code = (
        "import sys, numpy as np\n"
        "from avtag.video.recognize import load_recognizer\n"
        "r = load_recognizer('efficientnet_lite0', device='cpu')\n"
        "out = r(np.zeros((1, 300, 400, 3), np.uint8))\n"
        "assert out.probs.shape == (1, 1000) and len(r.class_names) == 1000\n"
        "heavy = [m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)
