"""Training-batch samplers and the one choice between them (``data.sampler``).

Three ways of drawing training mini-batches, named after where they come from:

=========  ===========================================================  ==========================
name       scheme                                                       used by
=========  ===========================================================  ==========================
shuffle    plain shuffled epochs (every clip once per epoch)            004 (CRNN), 002, 001
kong       uniform round-robin over the classes: every class the same   AudioSet recipes (Kong et
           share of each batch (:class:`avtag.data.datasets.             al., cited by 000 §3.4 and
           ClassBalancedSampler`)                                       003 §3.1)
xu         Xu et al.'s ratio balancing: each class gets 1-5 slots of    000's DCASE 2017 setting
           every round by its clip count (:class:`RatioBalancedSampler`) (000 §3.4 cites Xu [33])
=========  ===========================================================  ==========================

Xu's rule (authors' code, yongxuUSTC/dcase2017_task4_cvssp ``data_generator.py``,
``RatioDataGenerator``): a class with fewer than 1,000 training clips gets one slot,
fewer than 2,000 two, fewer than 3,000 three, fewer than 4,000 four, otherwise five.
The slots of all classes form one list; rounds of that list, each shuffled, are
concatenated into a queue and every batch takes the next ``batch_size`` slots; a slot
of class ``c`` is filled with the next clip of a shuffled list of ``c``'s clips,
reshuffled when used up. A class of 5,000 clips against one of 500 thus gets 5/6 and
1/6 of every batch (uniform round-robin would give 1/2 each).

Our documented choices where the authors' code does something incidental:
- A class whose clip list runs out mid-batch is reshuffled and continues, so every
  batch has exactly ``batch_size`` clips (the authors' generator returns a shorter
  batch then).
- Clips with no label are never drawn, as in the authors' generator (DCASE 2017 has
  none); a label matrix with no positive at all is refused.
- One epoch is ``ceil(clips / (batch_size * processes))`` batches unless
  ``num_batches`` says otherwise (the authors call 100 batches an epoch); under DDP
  every process draws its own stream, seeded by ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch import Tensor
from torch.utils.data import DistributedSampler

SAMPLERS = ("shuffle", "kong", "xu")
# Xu's class-count thresholds: fewer clips than the i-th bound -> i + 1 slots, else 5.
XU_SLOT_BOUNDS = (1000, 2000, 3000, 4000)


def xu_slots(clip_count: int) -> int:
    """Slots per round of a class with ``clip_count`` training clips (1-5, Xu's rule)."""
    for slots, bound in enumerate(XU_SLOT_BOUNDS, start=1):
        if clip_count < bound:
            return slots
    return len(XU_SLOT_BOUNDS) + 1


class _BalancedStream(DistributedSampler):
    """What both balanced samplers share: the checked multi-hot targets, ``num_batches *
    batch_size`` indices per process and epoch, one stream per ``(seed, epoch, rank)``.

    It subclasses :class:`DistributedSampler` so that Lightning does not wrap (and reshuffle)
    it under DDP: each rank draws its own stream instead.
    """

    def __init__(self, targets: np.ndarray | Tensor, batch_size: int, num_batches: int | None = None,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        targets = np.asarray(targets) > 0.5
        if targets.ndim != 2 or targets.shape[0] == 0:
            raise ValueError("targets must be a non-empty (clips, classes) multi-hot matrix")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        super().__init__(range(targets.shape[0]), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.batch_size = int(batch_size)
        self.num_batches = int(num_batches) if num_batches else math.ceil(targets.shape[0] / (batch_size * num_replicas))
        self.targets = targets

    def __len__(self) -> int:
        return self.num_batches * self.batch_size


class ClassBalancedSampler(_BalancedStream):
    """Indices whose consecutive blocks of ``batch_size`` are class-balanced mini-batches.

    Scheme: the classes (plus one "background" group for clips without labels, if any)
    are visited round-robin in a random order, re-drawn after each full round; each
    visit takes the next clip of that class from a shuffled list of its clips,
    reshuffled whenever it is used up. The round runs on across batch boundaries. Each
    epoch yields ``num_batches * batch_size`` indices per process; the stream depends
    only on ``(seed, epoch, rank)`` (Lightning calls :meth:`set_epoch`).

    It subclasses :class:`DistributedSampler` so that Lightning does not wrap (and
    reshuffle) it under DDP: each rank draws its own balanced stream instead.
    """

    def __init__(self, targets: np.ndarray | Tensor, batch_size: int, num_batches: int | None = None,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(targets, batch_size, num_batches, seed, num_replicas, rank)
        targets = self.targets
        groups = [np.flatnonzero(targets[:, k]) for k in range(targets.shape[1])]
        background = np.flatnonzero(~targets.any(axis=1))
        self.groups = [g for g in groups if g.size] + ([background] if background.size else [])

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        queues = [rng.permutation(group) for group in self.groups]
        positions = [0] * len(self.groups)
        order = rng.permutation(len(self.groups))
        turn = 0
        for _ in range(len(self)):
            if turn == len(order):
                order, turn = rng.permutation(len(self.groups)), 0
            group = order[turn]
            turn += 1
            if positions[group] == len(queues[group]):
                queues[group], positions[group] = rng.permutation(self.groups[group]), 0
            yield int(queues[group][positions[group]])
            positions[group] += 1


class RatioBalancedSampler(_BalancedStream):
    """Indices whose consecutive blocks of ``batch_size`` are Xu-balanced mini-batches.

    Same constructor as :class:`avtag.data.datasets.ClassBalancedSampler`; subclasses
    :class:`DistributedSampler` so Lightning does not wrap it under DDP (each rank draws
    its own stream). ``slot_shares`` gives each class's expected share of a batch.
    """

    def __init__(
        self,
        targets: np.ndarray | Tensor,
        batch_size: int,
        num_batches: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(targets, batch_size, num_batches, seed, num_replicas, rank)
        targets = self.targets
        if not targets.any():
            raise ValueError("Xu's ratio balancing needs at least one labelled clip")
        self.groups = [np.flatnonzero(targets[:, k]) for k in range(targets.shape[1])]
        self.slots = [xu_slots(g.size) if g.size else 0 for g in self.groups]
        self.slot_list = np.repeat(np.arange(len(self.groups)), self.slots)

    @property
    def slot_shares(self) -> np.ndarray:
        """Expected share of each class in a batch: its slots over all slots."""
        slots = np.asarray(self.slots, dtype=np.float64)
        return slots / slots.sum()

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        queues = [rng.permutation(group) for group in self.groups]
        positions = [0] * len(self.groups)
        pending: list[int] = []
        for _ in range(self.num_batches):
            while len(pending) < self.batch_size:
                pending += rng.permutation(self.slot_list).tolist()
            batch_slots, pending = pending[: self.batch_size], pending[self.batch_size:]
            counts = np.bincount(batch_slots, minlength=len(self.groups))
            for group, count in enumerate(counts):
                for _ in range(int(count)):
                    if positions[group] == len(queues[group]):
                        queues[group], positions[group] = rng.permutation(self.groups[group]), 0
                    yield int(queues[group][positions[group]])
                    positions[group] += 1


def resolve_sampler(sampler: str | None, balanced: bool | None) -> str:
    """The sampler name from ``data.sampler`` or, for older configs, ``data.balanced``
    (``true`` = "kong", ``false`` = "shuffle"). ``sampler`` wins when both are given."""
    if sampler is not None:
        if sampler not in SAMPLERS:
            raise ValueError(f"data.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        return sampler
    return "kong" if balanced is None or balanced else "shuffle"


__all__ = ["SAMPLERS", "RatioBalancedSampler", "resolve_sampler", "xu_slots"]
