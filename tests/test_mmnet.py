"""M&mnet / M&mnet-MS (002): shapes, eq. 5-11 on small tensors, gradients, learning."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from avtag.audio.models import TaggingOutput, build_model, from_pretrained
from avtag.audio.models.mmnet import (
    MMNet,
    MMNetMS,
    attention_prediction,
    authors_micro_loss,
    class_loss_weights,
    micro_loss,
    multi_head_attention,
    weighted_cross_entropy,
)
from avtag.data.synthetic import make_tone_features
from conftest import train_and_score
from model_checks import assert_gradients_reach_every_parameter, assert_round_trip

SMALL = dict(num_classes=4, n_mels=16, channels=[16, 16, 32, 32], attention_heads=3, micro_hidden=16)


# --------------------------------------------------------------------------- shapes


def test_default_sizes_match_002_table_1():
    """Table 1 (DCASE17, 128 mel, 17 classes): ResNet 3.70 M; M&mnet 4.16 M = +0.46 M for one
    attention and one detection layer ("12+2")."""
    model = build_model("mmnet")
    micro = sum(p.numel() for p in model.micro.parameters())
    assert model.num_parameters - micro == pytest.approx(3.70e6, abs=0.02e6)
    assert micro == pytest.approx(0.46e6, abs=0.005e6)
    assert len(list(model.micro[0].children())) == 2  # f_det and f_att, one layer each
    assert model.micro[0].attention.out_channels == 384  # M = 384 heads (authors' Mmnet.py)
    assert model.default_frontend == "mmnet" and model.time_stride == 16


def test_ms_follows_table_4_layout_at_527_classes():
    """Table 4: M&mnet-MS "12+10", "8M": L = 3 maps, 2 up-samplings, five micro subnets.

    Table 4 prints the size to one significant figure, so "8M" means 7.5-8.5 M: the
    tolerance is that rounding. The exact figures are the arithmetic of MMNetMS's docstring.
    """
    model = build_model("mmnet_ms", num_classes=527)
    assert len(model.stages) == 3 and len(model.upsamplers) == 2 and len(model.micro) == 5
    assert model.num_parameters == pytest.approx(8e6, abs=0.5e6)
    micro = sum(p.numel() for p in model.micro.parameters())
    upsampling = sum(p.numel() for p in model.upsamplers.parameters())
    assert (model.num_parameters - micro - upsampling, micro, upsampling) == (4_239_375, 3_152_971, 525_056)
    # taps of the authors' multi-scale Mmnet.py: block 1's and block 2's inputs, then X; up-sampled back
    assert [subnet.detector.in_channels for subnet in model.micro] == [128, 256, 384, 256, 128]
    assert all(subnet.attention.out_channels == 384 for subnet in model.micro)  # Table 1's subnet, M = 384
    per_map = build_model("mmnet_ms", num_classes=527, attention_heads="channels")  # authors' M = K^(l)
    assert [subnet.attention.out_channels for subnet in per_map.micro] == [128, 256, 384, 256, 128]
    assert per_map.num_parameters == pytest.approx(8e6, abs=0.5e6)
    assert build_model("mmnet", attention_heads="channels").num_parameters == build_model("mmnet").num_parameters
    with pytest.raises(ValueError, match="attention_heads"):
        build_model("mmnet", attention_heads="many")


def test_ms_maps_have_the_strides_of_the_pyramid():
    """X^(1..3) at time strides 1, 4, 16, then the up-sampled maps at strides 4 and 1."""
    model = build_model("mmnet_ms").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 896, 128))
    assert [p.shape[1] for p in out.extras["segment_probs"]] == [896, 224, 56, 224, 896]
    assert out.frame_probs.shape == (1, 56, 17) and out.attention["segment"].shape == (1, 56)


@pytest.mark.parametrize("name", ["mmnet", "mmnet_ms"])
def test_ten_second_clip_shapes(name):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 896, 128))  # 10 s at the "mmnet" preset (hop 492)
    assert out.clip_probs.shape == (2, 17)
    assert out.attention["segment"].shape == (2, 56)  # 896 / 16: 0.1785-s segments
    assert out.frame_probs.shape == (2, 56, 17)
    assert out.frame_stride == 16


@pytest.mark.parametrize("frames", [200, 33, 16, 3])
@pytest.mark.parametrize("cls", [MMNet, MMNetMS])
@pytest.mark.parametrize("macro", ["convnet", "resnet"])
def test_other_lengths(cls, macro, frames):
    model = cls(macro=macro, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, frames, 16))
    assert out.clip_probs.shape == (2, 4)
    quarter = math.ceil(frames / 4)
    sixteenth = math.ceil(quarter / 4)
    got = [p.shape[1] for p in out.extras["segment_probs"]]
    if cls is MMNet:
        assert got == [sixteenth]
    else:  # X^(1..3) at T, T/4, T/16, then the transposed-conv maps at T/4 and T: 2L - 1 = 5
        assert got == [frames, quarter, sixteenth, quarter, frames]
    assert out.frame_probs.shape == (2, sixteenth, 4)


# --------------------------------------------------------------------------- equations


def test_attention_heads_are_softmaxed_over_time_and_summed():
    logits = torch.randn(2, 7, 3)
    a = multi_head_attention(logits)
    manual = sum(torch.exp(logits[..., m]) / torch.exp(logits[..., m]).sum(dim=1, keepdim=True) for m in range(3))
    torch.testing.assert_close(a, manual)  # eq. 6
    torch.testing.assert_close(a.sum(dim=1), torch.full((2,), 3.0))

    model = MMNet(**SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 80, 16))
    per_head = torch.softmax(out.extras["head_logits"][0], dim=1).sum(dim=1)
    torch.testing.assert_close(per_head, torch.ones(2, 3))  # each head sums to 1 over time
    torch.testing.assert_close(out.attention["segment"].sum(dim=1), torch.full((2,), 3.0))


def test_loss_equation_8_by_hand():
    y = torch.tensor([[1.0, 0.0]])
    y_hat = torch.tensor([[0.8, 0.1]])
    d = torch.tensor([[[0.9, 0.2], [0.3, 0.6]]])
    a = torch.tensor([[1.5, 0.5]])

    def xi(p):  # cross entropy averaged over the two classes
        return -(math.log(p[0]) + math.log(1 - p[1])) / 2

    expected = xi([0.8, 0.1]) + 1.5 * xi([0.9, 0.2]) + 0.5 * xi([0.3, 0.6])
    model = MMNet(num_classes=2, n_mels=16, channels=[8, 8, 8, 8], micro_hidden=None)
    output = TaggingOutput(
        clip_probs=y_hat, extras={"macro_probs": y_hat, "segment_probs": [d], "segment_attention": [a]}
    )
    assert model.loss(output, y).item() == pytest.approx(expected, rel=1e-5)
    assert micro_loss(d, a, y).item() == pytest.approx(1.5 * xi([0.9, 0.2]) + 0.5 * xi([0.3, 0.6]), rel=1e-5)

    halved = MMNet(num_classes=2, n_mels=16, channels=[8, 8, 8, 8], micro_hidden=None, micro_weight=0.5)
    assert halved.loss(output, y).item() == pytest.approx(
        xi([0.8, 0.1]) + 0.5 * (1.5 * xi([0.9, 0.2]) + 0.5 * xi([0.3, 0.6])), rel=1e-5
    )

    weighted = MMNet(num_classes=2, n_mels=16, channels=[8, 8, 8, 8], micro_hidden=None, class_weights=[2.0, 0.5])

    def xi_w(p):  # eq. 11 weights on the positive term only (authors' mm_loss): class 1 is negative here
        return -(2.0 * math.log(p[0]) + math.log(1 - p[1])) / 2

    expected_w = xi_w([0.8, 0.1]) + 1.5 * xi_w([0.9, 0.2]) + 0.5 * xi_w([0.3, 0.6])
    assert weighted.loss(output, y).item() == pytest.approx(expected_w, rel=1e-5)


def test_ms_loss_sums_every_level():
    y = torch.tensor([[1.0, 0.0]])
    y_hat = torch.tensor([[0.7, 0.2]])
    levels = [torch.rand(1, t, 2) * 0.8 + 0.1 for t in (4, 2, 1, 2, 4)]
    attention = [torch.rand(1, t) for t in (4, 2, 1, 2, 4)]
    model = MMNetMS(num_classes=2, n_mels=16, channels=[8, 8, 8], micro_hidden=None)
    output = TaggingOutput(
        clip_probs=y_hat, extras={"macro_probs": y_hat, "segment_probs": levels, "segment_attention": attention}
    )
    expected = weighted_cross_entropy(y_hat, y) + sum(micro_loss(d, a, y) for d, a in zip(levels, attention))
    assert model.loss(output, y).item() == pytest.approx(expected.item(), rel=1e-6)  # eq. 10


def test_class_weights_equation_11():
    """p_c is each class's share of all training labels (authors' class_prior)."""
    targets = torch.zeros(10, 3)
    targets[:5, 0] = 1
    targets[:1, 1] = 1
    targets[:2, 2] = 1
    shares = (5 / 8, 1 / 8, 2 / 8)
    p_bar = sum(shares) / 3
    expected = [((p_bar / p) * (1 - p) / (1 - p_bar)) ** 0.3 for p in shares]
    assert class_loss_weights(targets) == pytest.approx(expected, rel=1e-9)
    assert class_loss_weights(targets.numpy(), beta=1.0) == pytest.approx(
        [((p_bar / p) * (1 - p) / (1 - p_bar)) for p in shares], rel=1e-9
    )
    balanced = torch.zeros(4, 2)
    balanced[:2] = 1
    assert class_loss_weights(balanced) == pytest.approx([1.0, 1.0])
    never = torch.zeros(4, 2)
    never[:2, 0] = 1
    assert all(math.isfinite(w) for w in class_loss_weights(never))  # class with no positives
    with pytest.raises(ValueError):
        class_loss_weights(torch.zeros(5))


def test_positive_only_weights_move_the_optimal_constant_prediction():
    """A class on 1% of clips with w = 1.83: weighting both terms keeps the best constant
    prediction at 0.0100; weighting the positive term (the authors' mm_loss) moves it to
    w p / (w p + 1 - p) = 0.0181."""
    p, w = 0.01, 1.83
    grid = torch.linspace(0.001, 0.05, 4901)
    probs = grid.unsqueeze(1)
    expected_loss = p * weighted_cross_entropy(probs, torch.ones(1), torch.tensor([w])) + (1 - p) * (
        weighted_cross_entropy(probs, torch.zeros(1), torch.tensor([w]))
    )
    best = grid[expected_loss.argmin()].item()
    assert best == pytest.approx(w * p / (w * p + 1 - p), abs=1e-4) and best == pytest.approx(0.0181, abs=1e-4)
    both_terms = -(w * p * torch.log(grid) + w * (1 - p) * torch.log(1 - grid))
    assert grid[both_terms.argmin()].item() == pytest.approx(0.0100, abs=1e-4)


def test_authors_micro_loss_weights_positive_terms_by_detached_attention():
    d = torch.tensor([[[0.9, 0.2], [0.3, 0.6]]], requires_grad=True)
    a = torch.tensor([[1.5, 0.5]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([2.0, 0.5])
    value = authors_micro_loss(d, a, y, w)
    expected = (-2.0 * 1.5 * math.log(0.9) - math.log(0.8) - 2.0 * 0.5 * math.log(0.3) - math.log(0.4)) / 4
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.sum().backward()
    assert a.grad is None or a.grad.abs().sum() == 0  # a_t enters as att_sc.data
    model = MMNet(num_classes=2, n_mels=16, channels=[8, 8, 8, 8], micro_loss="authors", class_weights=[2.0, 0.5])
    output = TaggingOutput(clip_probs=d[:, 0], extras={"macro_probs": d[:, 0].detach(), "segment_probs": [d.detach()],
                                                       "segment_attention": [a.detach()]})
    macro = weighted_cross_entropy(d[:, 0].detach(), y, w)
    assert model.loss(output, y).item() == pytest.approx((macro + expected).item(), rel=1e-5)
    with pytest.raises(ValueError, match="micro_loss"):
        MMNet(micro_loss="mine")


def test_ensemble_prediction_equation_9():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 16)
    model = MMNet(ensemble_mu=0.5, **SMALL).eval()
    with torch.no_grad():
        out = model(x)
    d, a = out.extras["segment_probs"][0], out.extras["segment_attention"][0]
    alpha = torch.exp(a) / torch.exp(a).sum(dim=1, keepdim=True)
    y_att = (alpha.unsqueeze(-1) * d).sum(dim=1)
    torch.testing.assert_close(out.extras["attention_probs"], y_att)
    torch.testing.assert_close(attention_prediction(d, a), y_att)
    torch.testing.assert_close(out.clip_probs, 0.5 * out.extras["macro_probs"] + 0.5 * y_att)

    skewed = MMNet(ensemble_mu=0.8, **SMALL).eval()
    skewed.load_state_dict(model.state_dict())
    with torch.no_grad():
        out_skewed = skewed(x)
    torch.testing.assert_close(out_skewed.clip_probs, 0.8 * out.extras["macro_probs"] + 0.2 * y_att)

    without_ep = MMNet(ensemble=False, **SMALL).eval()
    without_ep.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(without_ep(x).clip_probs, out.extras["macro_probs"])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="macro"):
        MMNet(macro="vgg")
    with pytest.raises(ValueError, match="class_weights"):
        MMNet(num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="mu"):
        MMNet(ensemble_mu=1.5)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("cls", [MMNet, MMNetMS])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    assert_gradients_reach_every_parameter(cls(**SMALL), torch.randn(4, 64, 16), torch.tensor([[1.0, 0, 1, 0]] * 4))


@pytest.mark.parametrize("cls", [MMNet, MMNetMS])
def test_serialize_round_trip(cls, tmp_path):
    model = cls(class_weights=[1.0, 2.0, 0.5, 1.5], ensemble=False, **SMALL)
    restored = assert_round_trip(model, torch.randn(2, 48, 16), tmp_path)
    torch.testing.assert_close(restored.class_weights, model.class_weights)


@pytest.mark.parametrize("name, macro", [("mmnet", "convnet"), ("mmnet", "resnet"), ("mmnet_ms", "convnet")])
def test_learns_the_weak_label_task(name, macro):
    torch.manual_seed(0)
    model = build_model(name, macro=macro, **SMALL)
    before, after = train_and_score(model)
    assert after > 0.85 and after > before + 0.2


def test_auto_class_weights_follow_eq_11_and_are_saved():
    """class_weights="auto": eq. 11 weights from the training labels, kept in the state dict."""
    targets = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float32)
    model = MMNet(**(SMALL | {"class_weights": "auto"}))
    torch.testing.assert_close(model.class_weights, torch.ones(4))
    model.fit_class_weights(targets)
    torch.testing.assert_close(model.class_weights, torch.tensor(class_loss_weights(targets)))
    assert model.class_weights[2] > 1.0 > model.class_weights[0]  # rare class up, frequent class down
    restored = from_pretrained(model.serialize())
    torch.testing.assert_close(restored.class_weights, model.class_weights)
    with pytest.raises(ValueError, match="class_weights"):
        MMNet(**(SMALL | {"class_weights": "sometimes"}))


def test_training_module_fits_auto_class_weights_when_training_starts():
    from types import SimpleNamespace

    from avtag.train import TaggingModule

    module = TaggingModule(
        model_name="mmnet", model_args=SMALL | {"class_weights": "auto"}, frontend="mmnet", classes=["a", "b", "c", "d"]
    )
    targets = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=np.float32)
    module._trainer = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=SimpleNamespace(targets=targets)))
    module.on_train_start()
    torch.testing.assert_close(module.model.class_weights, torch.tensor(class_loss_weights(targets)))


def test_auto_class_weights_train_through_lightning(tmp_path):
    """End to end: a Lightning fit with class_weights: auto sets the eq. 11 weights from the
    training loader's labels (also without a data module), and without "auto" nothing changes."""
    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    from avtag.train import TaggingModule

    features, targets = make_tone_features(16, num_classes=4, frames=64, n_mels=16, seed=0)

    class Clips(Dataset):
        def __init__(self):
            self.targets = np.asarray(targets)

        def __len__(self):
            return len(features)

        def __getitem__(self, i):
            return {"features": torch.as_tensor(features[i]), "target": torch.as_tensor(targets[i])}

    for weights in ("auto", None):
        module = TaggingModule(model_name="mmnet", model_args=SMALL | {"class_weights": weights}, frontend=None,
                               classes=["a", "b", "c", "d"])
        trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(module, train_dataloaders=DataLoader(Clips(), batch_size=8))
        if weights == "auto":
            torch.testing.assert_close(module.model.class_weights, torch.tensor(class_loss_weights(targets)))
        else:
            assert module.model.class_weights is None
