"""GL-AT (003): window selection and clamping (§2.2), batched local stream, eq. 3-6,
backbones crnn / cnn10 / sca, gradients, learning, serialisation."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score

from avtag.audio.models import available_models, from_pretrained
from avtag.audio.models.base import binary_cross_entropy
from avtag.audio.models.glat import GLAT, clamp_window_starts, crop_windows, max_mean_pool, select_local_windows
from avtag.data.synthetic import make_tone_features
from model_checks import assert_gradients_reach_every_parameter, assert_round_trip

# Small backbones (16 mel bins, 4 classes) for speed.
BACKBONES = {
    "crnn": dict(n_mels=16, num_classes=4, conv_channels=[8, 8, 16, 16], freq_pools=[2, 2, 2, 2], rnn_hidden=16),
    "cnn10": dict(n_mels=16, num_classes=4, channels=[8, 8, 16, 16], embedding_dim=16),
    # reduction 2 keeps the attention FCs of the tiny SCA wider than one (dead-able) unit
    "sca": dict(n_mels=16, num_classes=4, channels=[8, 8, 8, 8, 16, 16, 16], input_frames=200, reduction=2),
}


def small_glat(backbone: str, **kwargs) -> GLAT:
    if backbone not in available_models():
        pytest.skip(f"backbone {backbone!r} is not in this checkout")
    return GLAT(backbone=backbone, backbone_args=BACKBONES[backbone], **kwargs)


# --------------------------------------------------------------------------- §2.2 selection


def test_window_clamping_exact_indices():
    total, window = 1000, 300  # 10 s at 100 frames/s, tau = 3 s
    centres = torch.tensor([500, 150, 149, 10, 0, 850, 851, 999])
    starts = clamp_window_starts(centres, window, total)
    # [m - 150, m + 150) inside; [0, 300) when m - 150 < 0; [700, 1000) when m + 150 > 1000
    assert starts.tolist() == [350, 0, 0, 0, 0, 700, 700, 700]
    assert clamp_window_starts(torch.tensor([3]), 7, 7).tolist() == [0]  # window = clip
    assert clamp_window_starts(torch.tensor([4]), 3, 10).tolist() == [3]  # odd window: m - 1 .. m + 1
    with pytest.raises(ValueError):
        clamp_window_starts(centres, 1001, total)


def test_top_classes_and_peak_frames_select_the_windows():
    clip_probs = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    frame_probs = torch.zeros(1, 10, 4)  # 10 segments of 10 input frames each
    frame_probs[0, 2, 1] = 1.0  # class 1 peaks in segment 2 -> centre frame 25
    frame_probs[0, 9, 3] = 1.0  # class 3 peaks in the last segment -> centre 95, clamped
    frame_probs[0, 0, 2] = 1.0  # class 2 peaks in the first segment -> centre 5, clamped
    starts, classes = select_local_windows(clip_probs, frame_probs, num_frames=100, window=30, num_clips=3)
    assert classes.tolist() == [[1, 3, 2]]  # by clip score, descending
    assert starts.tolist() == [[10, 70, 0]]  # [10, 40), [70, 100), [0, 30)


def test_crops_come_from_the_input_features():
    features = torch.arange(2 * 20 * 3, dtype=torch.float32).reshape(2, 20, 3)
    starts = torch.tensor([[0, 5], [15, 2]])
    crops = crop_windows(features, starts, 5)
    assert crops.shape == (4, 5, 3)  # (B * N, window, F)
    torch.testing.assert_close(crops[0], features[0, 0:5])
    torch.testing.assert_close(crops[1], features[0, 5:10])
    torch.testing.assert_close(crops[2], features[1, 15:20])
    torch.testing.assert_close(crops[3], features[1, 2:7])


def test_local_stream_runs_once_on_a_batch_of_all_crops():
    model = small_glat("cnn10", num_local_clips=3, local_seconds=0.5, frames_per_second=100).eval()
    seen = []
    model.local_stream.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    x = torch.randn(2, 200, 16)
    with torch.no_grad():
        out = model(x)
    assert seen == [(2 * 3, 50, 16)]  # one call, (B * N, tau_frames, F)
    # the crops fed to the local stream are the selected windows of the input
    starts = out.extras["local_starts"]
    assert starts.shape == (2, 3) and ((starts >= 0) & (starts <= 150)).all()
    with torch.no_grad():
        local = model.local_stream(crop_windows(x, starts, 50)).clip_probs.reshape(2, 3, -1)
    torch.testing.assert_close(out.extras["local_probs"], local)


# --------------------------------------------------------------------------- eq. 3-6


def test_pooling_fusion_and_loss_equations():
    scores = torch.tensor([[[0.2, 0.9], [0.6, 0.1], [0.4, 0.5]]])
    torch.testing.assert_close(max_mean_pool(scores, dim=1), torch.tensor([[(0.6 + 0.4) / 2, (0.9 + 0.5) / 2]]))

    model = small_glat("cnn10").eval()
    x = torch.randn(3, 400, 16)
    y = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        out = model(x)
    g, local = out.extras["global_probs"], out.extras["local_probs"]
    y_l = 0.5 * (local.max(dim=1).values + local.mean(dim=1))  # eq. 3
    torch.testing.assert_close(out.extras["local_clip_probs"], y_l)
    fused = 0.5 * (torch.maximum(g, y_l) + (g + y_l) / 2)  # P(y_g, y_l) at inference
    torch.testing.assert_close(out.clip_probs, fused)
    expected_loss = binary_cross_entropy(g, y) + binary_cross_entropy(y_l, y)  # eq. 4-6
    torch.testing.assert_close(model.loss(out, y), expected_loss)

    for streams, expected in (("global", g), ("local", y_l)):
        single = small_glat("cnn10", inference_streams=streams).eval()
        single.load_state_dict(model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(single(x).clip_probs, expected)


def test_defaults_follow_the_paper_and_the_backbone_front_end():
    model = small_glat("crnn")
    assert model.num_local_clips == 5 and model.local_frames == 600  # N = 5, tau = 3 s at 200 fps
    assert model.default_frontend == "crnn"
    assert small_glat("cnn10").local_frames == 300  # "cnn" preset: 100 frames/s
    assert model.global_stream is not model.local_stream
    assert set(model.state_dict()) == {f"global_stream.{k}" for k in model.global_stream.state_dict()} | {
        f"local_stream.{k}" for k in model.local_stream.state_dict()
    }
    with pytest.raises(ValueError):
        GLAT(backbone="crnn", inference_streams="average")
    with pytest.raises(ValueError):
        GLAT(backbone="glat")


def test_class_count_and_mel_bins_reach_both_streams():
    model = GLAT(backbone="cnn10", backbone_args={"channels": [4, 4, 8, 8]}, num_classes=6, n_mels=20)
    for stream in (model.global_stream, model.local_stream):
        assert stream.model_args["num_classes"] == 6 and stream.model_args["n_mels"] == 20
    with pytest.raises(ValueError, match="disagrees"):
        GLAT(backbone="cnn10", backbone_args={"num_classes": 4}, num_classes=6)


# --------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("backbone", ["crnn", "cnn10", "sca"])
@pytest.mark.parametrize("frames", [400, 250])
def test_backbones_as_global_stream(backbone, frames):
    model = small_glat(backbone, num_local_clips=3, local_seconds=0.66, frames_per_second=100).eval()
    with torch.no_grad():
        out = model(torch.randn(2, frames, 16))
    assert out.clip_probs.shape == (2, 4)
    assert out.extras["local_probs"].shape == (2, 3, 4)
    assert out.extras["local_frames"] == 66  # not a multiple of CRNN's 20: its own padding copes
    assert out.frame_probs.shape[:2] == model.global_stream(torch.randn(2, frames, 16)).frame_probs.shape[:2]
    assert ((out.clip_probs >= 0) & (out.clip_probs <= 1)).all()


def test_clip_shorter_than_tau_uses_the_whole_clip():
    model = small_glat("crnn").eval()  # tau = 3 s = 600 frames
    with torch.no_grad():
        out = model(torch.randn(2, 130, 16))
    assert out.extras["local_frames"] == 130
    assert (out.extras["local_starts"] == 0).all()


@pytest.mark.parametrize("backbone", ["crnn", "cnn10", "sca"])
def test_gradients_reach_every_parameter_of_both_streams(backbone):
    torch.manual_seed(0)
    model = small_glat(backbone, num_local_clips=2, local_seconds=1.0, frames_per_second=100)
    assert_gradients_reach_every_parameter(model, torch.randn(3, 200, 16), torch.tensor([[1.0, 0, 1, 0]] * 3))


def test_serialize_round_trip(tmp_path):
    model = small_glat("crnn", num_local_clips=2, local_seconds=1.5)
    restored = assert_round_trip(model, torch.randn(2, 400, 16), tmp_path)
    assert restored.model_args["backbone"] == "crnn" and restored.local_frames == 300


def test_learns_the_weak_label_task():
    features, targets = make_tone_features(160, num_classes=4, frames=160, n_mels=16, seed=1, contrast=2.0)
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    torch.manual_seed(0)
    model = small_glat("crnn", num_local_clips=2, local_seconds=0.6, frames_per_second=100)

    def score() -> float:
        model.eval()
        with torch.no_grad():
            return float(average_precision_score(y[128:].numpy(), model(x[128:]).clip_probs.numpy(), average="macro"))

    before = score()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(60):
        batch = torch.randint(0, 128, (16,))
        loss = model.loss(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = score()
    assert after > 0.85 and after > before + 0.2


# --------------------------------------------------------------------------- authors' variant


def _cnn10_export(tmp_path):
    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models import build_model
    from avtag.audio.tagger import AudioTagger

    torch.manual_seed(1)
    backbone = build_model("cnn10", **BACKBONES["cnn10"])
    tagger = AudioTagger(backbone, LogMelFrontEnd.from_preset("cnn", n_mels=16), classes=list("abcd"))
    return backbone, tagger.export(tmp_path / "cnn10_export")


def test_authors_variant_loads_freezes_and_trains_the_local_stream_only(tmp_path):
    """WangHelin1997/GL-AT main.py: a pretrained global stream in eval mode, never optimised,
    the local loss only; tau = 2 s; the local stream may start from the same weights."""
    backbone, export = _cnn10_export(tmp_path)
    model = GLAT(backbone="cnn10", backbone_args=BACKBONES["cnn10"], local_seconds=2.0, global_export=str(export),
                 freeze_global=True, loss_streams="local", local_from_global=True)
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(model.global_stream.state_dict()[key], value)
        torch.testing.assert_close(model.local_stream.state_dict()[key], value)
    assert model.local_frames == 200  # 2 s at 100 frames/s
    model.train()
    assert not model.global_stream.training and model.local_stream.training
    assert all(not p.requires_grad for p in model.global_stream.parameters())
    targets = torch.tensor([[1.0, 0, 0, 1]] * 2)
    output = model(torch.randn(2, 400, 16))
    loss = model.loss(output, targets)
    torch.testing.assert_close(loss, binary_cross_entropy(output.extras["local_clip_probs"], targets))
    loss.backward()
    assert all(p.grad is None for p in model.global_stream.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.local_stream.parameters())
    # the export path is not recorded: a rebuilt model takes the weights from the state dict
    assert model.model_args["global_export"] is None
    restored = from_pretrained(model.serialize()).eval()
    model.eval()
    x = torch.randn(1, 400, 16)
    with torch.no_grad():
        torch.testing.assert_close(restored(x).clip_probs, model(x).clip_probs)


def test_authors_variant_refuses_a_wrong_or_missing_export(tmp_path):
    from avtag.errors import CheckpointError

    _, export = _cnn10_export(tmp_path)
    with pytest.raises(CheckpointError, match="cnn10"):
        GLAT(backbone="crnn", backbone_args=BACKBONES["crnn"], global_export=str(export))
    with pytest.raises(CheckpointError):
        GLAT(backbone="cnn10", backbone_args=BACKBONES["cnn10"], global_export=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="local_from_global"):
        GLAT(backbone="cnn10", backbone_args=BACKBONES["cnn10"], local_from_global=True)
    with pytest.raises(ValueError, match="loss_streams"):
        GLAT(backbone="cnn10", backbone_args=BACKBONES["cnn10"], loss_streams="global")


def test_paper_default_trains_both_streams():
    model = small_glat("cnn10")
    assert (model.freeze_global, model.loss_streams) == (False, "both")
    out = model(torch.randn(2, 300, 16))
    targets = torch.tensor([[1.0, 0, 0, 1]] * 2)
    expected = binary_cross_entropy(out.extras["global_probs"], targets)
    expected = expected + binary_cross_entropy(out.extras["local_clip_probs"], targets)
    torch.testing.assert_close(model.loss(out, targets), expected)
