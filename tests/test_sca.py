"""Spatial and channel-wise attention (paper 001): shapes, eq. 2 and 4–10, variants,
parameter counts, gradients, learning a weak-label task, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from avtag.audio.models import build_model
from avtag.audio.models.sca import (
    AttentionModule,
    ChannelAttention,
    GlobalSpatialAttention,
    LocalSpatialAttention,
    SpatialAttention,
)
from avtag.data.synthetic import make_tone_features
from model_checks import assert_gradients_reach_every_parameter, assert_round_trip


SMALL = dict(channels=[4, 8, 8, 16, 16, 32, 32], n_mels=32, input_frames=200, reduction=4)


def small(**overrides):
    return build_model("sca", **{**SMALL, "num_classes": 4, **overrides})


def randomise_norms(module: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics/affine so eval-mode checks are not identities."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=generator)
            m.running_var.uniform_(0.5, 2.0, generator=generator)
            m.weight.data.uniform_(0.5, 1.5, generator=generator)
            m.bias.data.normal_(0, 0.3, generator=generator)


# --------------------------------------------------------------------------- shapes


def test_default_model_shapes_for_a_ten_second_clip():
    """001 §4.1: a 400 x 64 chunk; pooled by 8 in time -> 50 segments, W = 50 in eq. 6."""
    model = build_model("sca").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 400, 64))
    assert out.clip_probs.shape == (1, 17)
    assert out.frame_probs.shape == (1, 50, 17)  # 400 frames / 8
    assert out.attention["time"].shape == (1, 50, 17)
    # the last three blocks are attentive by default: freq 4, 2, 1; channels 256, 256, 512
    assert out.attention["spatial_block5"].shape == (1, 50, 4)
    assert out.attention["spatial_block6"].shape == (1, 50, 2)
    assert out.attention["spatial_block7"].shape == (1, 50, 1)
    assert out.attention["channel_block7"].shape == (1, 512)
    assert "spatial_block4" not in out.attention
    assert model.default_frontend == "sca"
    assert out.frame_stride == model.time_stride == 8
    local = model.blocks[6].attention.spatial.local_branch
    assert (local.width, local.weight1.shape[1]) == (50, 3)  # eq. 6: W = 50, W / r = 3 hidden units


def test_every_block_follows_001_section_4_2():
    """Two 3x3 conv + BN + ReLU and a 1x1 conv + BN + ReLU shortcut in all 7 blocks."""
    model = build_model("sca")
    for block in model.blocks:
        conv, norm, relu = block.shortcut
        assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
        assert isinstance(norm, torch.nn.BatchNorm2d) and isinstance(relu, torch.nn.ReLU)
    block = model.blocks[3].eval()  # 128 -> 128: a 1x1 shortcut even where the width does not change
    x = torch.randn(2, 128, 6, 4)
    with torch.no_grad():
        branch = torch.relu(block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(x))))))
        out, _ = block(x)
        assert torch.allclose(out, branch + block.shortcut(x))
        assert (branch >= 0).all()  # ReLU after the second 3x3 convolution


@pytest.mark.parametrize("frames, segments", [(140, 18), (200, 25), (260, 33)])
def test_other_clip_lengths(frames, segments):
    # 7 s, 10 s and 13 s at 20 frames/s for the small model built for 200 frames
    model = small().eval()
    with torch.no_grad():
        out = model(torch.randn(2, frames, 32))
    assert out.clip_probs.shape == (2, 4)
    assert out.frame_probs.shape == (2, segments, 4)
    assert out.attention["spatial_block7"].shape == (2, segments, 1)
    assert torch.all((out.clip_probs > 0) & (out.clip_probs < 1))


def test_attentive_blocks_and_variants_select_modules():
    assert [k for k in small(attention_blocks=1).eval()(torch.randn(1, 200, 32)).attention] == [
        "time", "spatial_block7", "channel_block7"
    ]
    assert list(small(attention="none").eval()(torch.randn(1, 200, 32)).attention) == ["time"]
    assert list(small(attention_blocks=0).eval()(torch.randn(1, 200, 32)).attention) == ["time"]
    only_c = small(attention="c", attention_blocks=2).eval()(torch.randn(1, 200, 32)).attention
    assert sorted(only_c) == ["channel_block6", "channel_block7", "time"]
    only_s = small(attention="s", attention_blocks=1).eval()(torch.randn(1, 200, 32)).attention
    assert sorted(only_s) == ["spatial_block7", "time"]
    joint = small(attention="c//s", attention_blocks=1).eval()(torch.randn(1, 200, 32)).attention
    assert joint["joint_block7"].shape == (1, 32, 25, 1)


@pytest.mark.parametrize(
    "kwargs",
    [dict(attention="foo"), dict(attention_blocks=4), dict(channels=[4, 8]), dict(spatial_branches=["middle"]),
     dict(spatial_branches=[])],
)
def test_bad_configurations_are_rejected(kwargs):
    with pytest.raises(ValueError):
        small(**kwargs)


def test_wrong_number_of_mel_bins_is_rejected():
    with pytest.raises(ValueError, match="32"):
        small()(torch.randn(1, 200, 64))


# --------------------------------------------------------------------------- equations


def test_eq2_attention_pooling_of_segment_probabilities():
    model = small().eval()
    with torch.no_grad():
        out = model(torch.randn(3, 200, 32))
    weights = out.attention["time"]
    assert torch.allclose(weights.sum(dim=1), torch.ones(3, 4), atol=1e-5)
    assert torch.all(weights > 0)
    assert torch.allclose(out.clip_probs, (weights * out.frame_probs).sum(dim=1), atol=1e-6)


def test_eq4_eq5_global_spatial_attention():
    torch.manual_seed(0)
    branch = GlobalSpatialAttention(hidden_channels=1)
    randomise_norms(branch)
    branch.eval()
    spatial = SpatialAttention(height=6, width=10, reduction=4, branches=["global"], global_channels=1).eval()
    spatial.global_branch.load_state_dict(branch.state_dict())
    features = torch.randn(2, 5, 10, 6)
    descriptor = features.mean(dim=1, keepdim=True)  # eq. 4: cross-channel mean
    bn1, bn2 = branch.norm1, branch.norm2
    hidden = F.conv2d(descriptor, branch.conv1.weight, padding=2)
    hidden = F.relu((hidden - bn1.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn1.running_var.view(1, -1, 1, 1) + bn1.eps)
                    * bn1.weight.view(1, -1, 1, 1) + bn1.bias.view(1, -1, 1, 1))
    expected = F.conv2d(hidden, branch.conv2.weight, padding=2)
    expected = (expected - bn2.running_mean) / torch.sqrt(bn2.running_var + bn2.eps) * bn2.weight + bn2.bias
    assert branch.conv1.kernel_size == (5, 5) and branch.conv2.kernel_size == (5, 5)
    with torch.no_grad():
        assert torch.allclose(spatial(features), expected, atol=1e-5)


def test_eq6_local_attention_is_one_fc_pair_per_frequency_row():
    torch.manual_seed(0)
    height, width, r = 3, 32, 16
    local = LocalSpatialAttention(height, width, reduction=r)
    assert local.weight1.shape == (height, width // r, width)  # W_{h,1} in R^{W/r x W}
    assert local.weight2.shape == (height, width, width // r)
    descriptor = torch.randn(2, 1, width, height)
    with torch.no_grad():
        mask = local(descriptor)
    for h in range(height):
        s_h = descriptor[:, 0, :, h]
        m_h = F.relu(s_h @ local.weight1[h].T + local.bias1[h]) @ local.weight2[h].T + local.bias2[h]
        assert torch.allclose(mask[:, 0, :, h], m_h, atol=1e-5)
    # rows are independent: changing row 0 leaves the masks of rows 1..H-1 unchanged
    changed = descriptor.clone()
    changed[..., 0] = 3 * torch.randn(2, 1, width)
    with torch.no_grad():
        other = local(changed)
    assert torch.equal(other[..., 1:], mask[..., 1:])
    assert not torch.allclose(other[..., 0], mask[..., 0])


def test_eq6_other_lengths_resample_rows():
    local = LocalSpatialAttention(2, 40, reduction=4)
    with torch.no_grad():
        assert local(torch.randn(1, 1, 28, 2)).shape == (1, 1, 28, 2)
        constant = local(torch.zeros(1, 1, 40, 2))
        stretched = local(torch.zeros(1, 1, 80, 2))
    # a constant row resampled is the same row, so the mask is the trained mask resampled
    assert torch.allclose(stretched[0, 0, ::2].mean(), constant[0, 0].mean(), atol=1e-2)


def test_eq7_spatial_mask_is_sigmoid_of_global_plus_local():
    torch.manual_seed(0)
    module = AttentionModule("s", channels=4, height=3, width=12, reduction=4).eval()
    randomise_norms(module)
    features = torch.randn(2, 4, 12, 3)
    with torch.no_grad():
        refined, maps = module(features)
        descriptor = features.mean(dim=1, keepdim=True)
        logits = module.spatial.global_branch(descriptor) + module.spatial.local_branch(descriptor)
    assert torch.allclose(maps["spatial"], torch.sigmoid(logits)[:, 0], atol=1e-6)
    assert torch.allclose(refined, torch.sigmoid(logits) * features, atol=1e-6)


def test_eq8_eq9_channel_mask():
    torch.manual_seed(0)
    channel = ChannelAttention(32, reduction=16)
    assert (channel.fc0.in_features, channel.fc0.out_features) == (32, 2)  # W_0 in R^{C/r x C}
    features = torch.randn(2, 32, 7, 3)
    z = features.mean(dim=(2, 3))  # eq. 8
    expected = channel.fc1.weight @ F.relu(channel.fc0.weight @ z.T + channel.fc0.bias[:, None]) + channel.fc1.bias[:, None]
    module = AttentionModule("c", channels=32, height=3, width=7, reduction=16)
    module.channel.load_state_dict(channel.state_dict())
    with torch.no_grad():
        refined, maps = module(features)
    assert torch.allclose(maps["channel"], torch.sigmoid(expected.T), atol=1e-6)
    assert torch.allclose(refined, torch.sigmoid(expected.T)[:, :, None, None] * features, atol=1e-6)


def _arrangements(seed: int = 0):
    """The three arrangements with identical spatial and channel weights."""
    torch.manual_seed(seed)
    reference = AttentionModule("sca", channels=8, height=3, width=12, reduction=4)
    randomise_norms(reference)
    modules = {}
    for name in ("sca", "csa", "c//s"):
        module = AttentionModule(name, channels=8, height=3, width=12, reduction=4)
        module.load_state_dict(reference.state_dict())
        modules[name] = module.eval()
    return modules


def test_eq10_sca_is_spatial_then_channel():
    module = _arrangements()["sca"]
    features = torch.randn(2, 8, 12, 3)
    with torch.no_grad():
        refined, _ = module(features)
        first = torch.sigmoid(module.spatial(features)) * features  # F' = M_s(F) F
        expected = torch.sigmoid(module.channel(first)) * first  # F'' = M_c(F') F'
    assert torch.allclose(refined, expected, atol=1e-6)


def test_csa_is_channel_then_spatial_and_differs_from_sca():
    modules = _arrangements()
    features = torch.randn(2, 8, 12, 3)
    with torch.no_grad():
        csa, _ = modules["csa"](features)
        sca, _ = modules["sca"](features)
        first = torch.sigmoid(modules["csa"].channel(features)) * features
        expected = torch.sigmoid(modules["csa"].spatial(first)) * first
    assert torch.allclose(csa, expected, atol=1e-6)
    assert not torch.allclose(csa, sca, atol=1e-4)


def test_parallel_arrangement_applies_one_sigmoid_to_the_summed_masks():
    module = _arrangements()["c//s"]
    features = torch.randn(2, 8, 12, 3)
    calls = []
    hooks = [sub.register_forward_hook(lambda mod, inp, out: calls.append(inp[0])) for sub in (module.spatial, module.channel)]
    with torch.no_grad():
        refined, maps = module(features)
        expected_mask = torch.sigmoid(module.spatial(features) + module.channel(features))
    for hook in hooks:
        hook.remove()
    # both branches see the same input F (parallel), not each other's output
    assert len(calls) >= 2 and all(torch.equal(c, features) for c in calls)
    assert torch.allclose(maps["joint"], expected_mask, atol=1e-6)
    assert torch.allclose(refined, expected_mask * features, atol=1e-6)
    # not the product of two separately squashed masks
    product = torch.sigmoid(module.spatial(features)) * torch.sigmoid(module.channel(features))
    assert not torch.allclose(maps["joint"], product, atol=1e-3)


# --------------------------------------------------------------------------- parameters and training


def test_parameter_count_of_attention_modules_matches_layer_sizes():
    blocks = 3
    base = small(attention="none")
    full = small(attention="sca", attention_blocks=blocks)
    r, expected = SMALL["reduction"], 0
    # attentive blocks 5, 6, 7 see (time, freq) = (200/8, 32/16), (25, 32/32), (25, 1); channels 16, 32, 32
    for channels, width, height in [(16, 25, 2), (32, 25, 1), (32, 25, 1)]:
        hidden_w, hidden_c = width // r, channels // r
        local = height * (hidden_w * width + hidden_w + width * hidden_w + width)
        global_ = 25 + 2 + 25 + 2  # two 5x5 one-channel convs (no bias) + their BatchNorms
        channel = channels * hidden_c + hidden_c + hidden_c * channels + channels
        expected += local + global_ + channel
    assert full.num_parameters - base.num_parameters == expected
    assert small(attention="s").num_parameters < full.num_parameters
    assert small(attention="c").num_parameters < full.num_parameters


@pytest.mark.parametrize("attention", ["sca", "csa", "c//s"])
def test_gradients_reach_every_parameter(attention):
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    assert_gradients_reach_every_parameter(small(attention=attention, attention_blocks=3), torch.randn(3, 200, 32), targets)


def test_learns_the_synthetic_weak_label_task():
    torch.manual_seed(0)
    task = dict(num_classes=4, frames=80, n_mels=16, burst_frames=(8, 20))
    train_x, train_y = make_tone_features(128, seed=1, **task)
    test_x, test_y = make_tone_features(64, seed=2, **task)
    model = build_model(
        "sca", num_classes=4, attention="sca", attention_blocks=2, channels=[4, 4, 8, 8, 8, 16, 16],
        time_pools=[2, 2, 1, 1, 1, 1], n_mels=16, input_frames=80, reduction=4,
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(10):
        for batch in torch.randperm(len(x)).split(32):
            optimiser.zero_grad()
            model.loss(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(test_x)).clip_probs.numpy()
    mean_ap = average_precision_score(test_y, scores, average="macro")
    assert mean_ap > 0.9, mean_ap


def test_serialize_round_trip_gives_identical_outputs(tmp_path):
    model = small(attention="c//s", attention_blocks=2, spatial_branches=["local"]).eval()
    randomise_norms(model)
    assert_round_trip(model, torch.randn(2, 230, 32), tmp_path, exact=True, attention_keys=["joint_block7"])
