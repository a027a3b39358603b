"""Training-batch samplers: Xu's ratio balancing (000's DCASE 2017 setting) and the
``data.sampler`` choice of the data module."""

from __future__ import annotations

import numpy as np
import pytest

from avtag.data.datasets import ClassBalancedSampler, ClipDataModule
from avtag.data.samplers import RatioBalancedSampler, resolve_sampler, xu_slots


def _two_classes(big: int = 5000, small: int = 500) -> np.ndarray:
    targets = np.zeros((big + small, 2), dtype=np.float32)
    targets[:big, 0] = 1
    targets[big:, 1] = 1
    return targets


def test_xu_slots_follow_the_authors_clip_count_bounds():
    assert [xu_slots(n) for n in (1, 999, 1000, 1999, 2000, 3999, 4000, 50000)] == [1, 1, 2, 2, 3, 4, 5, 5]


def test_ratio_sampler_gives_xu_proportions_not_uniform_ones():
    targets = _two_classes()
    sampler = RatioBalancedSampler(targets, batch_size=60, num_batches=200, seed=0)
    assert sampler.slot_shares == pytest.approx([5 / 6, 1 / 6])
    drawn = np.asarray(list(sampler))
    share_small = float(targets[drawn, 1].mean())
    assert share_small == pytest.approx(1 / 6, abs=0.01)  # Xu: [0.833, 0.167]
    # Kong's uniform round-robin on the same data gives [0.5, 0.5]
    kong = np.asarray(list(ClassBalancedSampler(targets, batch_size=60, num_batches=200, seed=0)))
    assert float(targets[kong, 1].mean()) == pytest.approx(0.5, abs=0.01)


def test_ratio_sampler_batches_are_full_and_streams_depend_on_seed_epoch_rank():
    targets = _two_classes(big=300, small=7)  # the small class runs out many times per epoch
    sampler = RatioBalancedSampler(targets, batch_size=16, num_batches=10, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 160
    assert first == list(RatioBalancedSampler(targets, batch_size=16, num_batches=10, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != first
    other_rank = RatioBalancedSampler(targets, batch_size=16, num_batches=10, seed=3, num_replicas=2, rank=1)
    assert list(other_rank) != first
    assert all(0 <= i < len(targets) for i in first)


def test_ratio_sampler_default_epoch_length_and_refusals():
    targets = _two_classes(big=90, small=10)
    assert len(RatioBalancedSampler(targets, batch_size=8, num_replicas=2)) == 7 * 8  # ceil(100 / 16) batches
    with pytest.raises(ValueError, match="labelled"):
        RatioBalancedSampler(np.zeros((4, 2)), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        RatioBalancedSampler(targets, batch_size=0)


def test_sampler_choice_and_the_balanced_flag_of_older_configs():
    assert resolve_sampler(None, True) == "kong"
    assert resolve_sampler(None, False) == "shuffle"
    assert resolve_sampler("xu", True) == "xu"
    with pytest.raises(ValueError, match="data.sampler"):
        resolve_sampler("uniform", None)
    assert ClipDataModule(sampler="xu").sampler == "xu"
    assert ClipDataModule(balanced=True).sampler == "kong"
    assert ClipDataModule(balanced=False).sampler == "shuffle"


class _Dataset:
    def __init__(self, targets: np.ndarray) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize(
    ("name", "sampler_type"), [("xu", RatioBalancedSampler), ("kong", ClassBalancedSampler), ("shuffle", None)]
)
def test_train_dataloader_uses_the_chosen_sampler(name, sampler_type):
    module = ClipDataModule(batch_size=4, num_workers=0, sampler=name, pin_memory=False)
    module.datasets["train"] = _Dataset(_two_classes(big=20, small=4))
    loader = module.train_dataloader()
    if sampler_type is None:
        assert not isinstance(loader.sampler, (RatioBalancedSampler, ClassBalancedSampler))
    else:
        assert isinstance(loader.sampler, sampler_type)
