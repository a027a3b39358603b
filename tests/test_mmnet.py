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
    class_loss_weights,
    micro_loss,
    multi_head_attention,
    weighted_cross_entropy,
)
from avtag.data.synthetic import make_tone_features
from conftest import train_and_score

SMALL = dict(num_classes=4, n_mels=16, channels=[16, 16, 32, 32], attention_heads=3, micro_hidden=16)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("macro, low, high", [("convnet", 1.3e6, 1.7e6), ("resnet", 3.4e6, 3.9e6)])
def test_default_macro_subnets_match_the_paper_sizes(macro, low, high):
    model = build_model("mmnet", macro=macro)
    micro = sum(p.numel() for p in model.micro.parameters())
    assert low < model.num_parameters - micro < high  # 002 Table 1: 1.54 M / 3.70 M
    assert model.default_frontend == "mmnet"


@pytest.mark.parametrize("name", ["mmnet", "mmnet_ms"])
def test_ten_second_clip_shapes(name):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 861, 128))  # 10 s at the "mmnet" preset
    assert out.clip_probs.shape == (2, 17)
    assert out.attention["segment"].shape == (2, 54)  # ceil(861 / 16): 0.186-s segments
    expected_frames = 54 if name == "mmnet" else 431  # MS: finest level, ceil(861 / 2)
    assert out.frame_probs.shape == (2, expected_frames, 17)


@pytest.mark.parametrize("frames", [200, 33, 16, 3])
@pytest.mark.parametrize("cls", [MMNet, MMNetMS])
@pytest.mark.parametrize("macro", ["convnet", "resnet"])
def test_other_lengths(cls, macro, frames):
    model = cls(macro=macro, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, frames, 16))
    assert out.clip_probs.shape == (2, 4)
    lengths = [math.ceil(frames / 2**level) for level in range(1, 5)]
    got = [p.shape[1] for p in out.extras["segment_probs"]]
    if cls is MMNet:
        assert got == lengths[-1:]
    else:  # X^(1..4), then the transposed-conv maps at T^(3), T^(2), T^(1): 2L - 1 = 7
        assert got == lengths + lengths[-2::-1]


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

    def xi_w(p):
        return -(2.0 * math.log(p[0]) + 0.5 * math.log(1 - p[1])) / 2

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
    targets = torch.zeros(10, 3)
    targets[:5, 0] = 1  # p = 0.5
    targets[:1, 1] = 1  # p = 0.1
    targets[:2, 2] = 1  # p = 0.2
    p_bar = (0.5 + 0.1 + 0.2) / 3
    expected = [((p_bar / p) * (1 - p) / (1 - p_bar)) ** 0.3 for p in (0.5, 0.1, 0.2)]
    assert class_loss_weights(targets) == pytest.approx(expected, rel=1e-9)
    assert class_loss_weights(targets.numpy(), beta=1.0) == pytest.approx(
        [((p_bar / p) * (1 - p) / (1 - p_bar)) for p in (0.5, 0.1, 0.2)], rel=1e-9
    )
    balanced = torch.zeros(4, 2)
    balanced[:2] = 1
    assert class_loss_weights(balanced) == pytest.approx([1.0, 1.0])
    never = torch.zeros(4, 2)
    never[:2, 0] = 1
    assert all(math.isfinite(w) for w in class_loss_weights(never))  # class with no positives
    with pytest.raises(ValueError):
        class_loss_weights(torch.zeros(5))


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
    model = cls(**SMALL).train()
    out = model(torch.randn(4, 64, 16))
    model.loss(out, torch.tensor([[1.0, 0, 1, 0]] * 4)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", [MMNet, MMNetMS])
def test_serialize_round_trip(cls, tmp_path):
    model = cls(class_weights=[1.0, 2.0, 0.5, 1.5], ensemble=False, **SMALL).eval()
    path = tmp_path / "model.pt"
    torch.save(model.serialize(), path)
    restored = from_pretrained(path).eval()
    assert type(restored) is cls
    torch.testing.assert_close(restored.class_weights, model.class_weights)
    x = torch.randn(2, 48, 16)
    with torch.no_grad():
        torch.testing.assert_close(restored(x).clip_probs, model(x).clip_probs)


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
