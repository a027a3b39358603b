"""The balanced validation split of DCASE 2017 Task 4 (004 §3.1), and the figures that
describe a split.

Choices where the paper is silent:

* Validation split (004 §3.1: "reserved 1,142 clips from the training set to make a balanced
  validation set"; the paper says nothing of multi-label clips). Balanced means positives:
  every event gets 1142 // 17 = 67 positives, the three rarest 68 (at most half of an event's
  clips). Multi-label clips keep about their training share (9.1% of the training list):
  (1) in an order shuffled by ``seed``, multi-label clips are taken while none of their
  events is full, up to that share of the expected clip count; (2) single-label clips fill
  every event to its target, rarest event first; (3) an event still short takes any clip
  that overfills nothing, and (4) then the clips with the fewest labels. As a multi-label clip counts for several events, the split holds
  fewer than 1,142 clips (1,042 on the official list, labels per clip {1: 948, 2: 88, 3: 6}) -- the price of 1,142 balanced
  positives with the test set's kind of clips in it (the test set is 22% multi-label).
  :func:`load_dcase17` makes it from the clips actually present when given ``present``
  (clips paired with downloaded audio), so a missing clip never thins the validation set.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

from avtag.data.manifests import ClipRecord
from avtag.events import event_names

VALIDATION_SIZE = 1142


def balanced_validation_split(
    records: Sequence[ClipRecord], size: int = VALIDATION_SIZE, seed: int = 0, classes: Sequence[str] | None = None
) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Hold out a class-balanced validation set (004 §3.1); returns ``(train, validation)``.

    ``size`` positives over the classes: each class gets ``size // C`` or one more (67-68
    for 1,142 over 17; the rarer classes get the extra one), and multi-label clips keep about
    the share they have in ``records`` (see the module docstring). Deterministic for a given
    ``seed`` and input order; both outputs keep the input order.
    """
    classes = list(classes or event_names())
    known = set(classes)
    if not 0 < size < len(records):
        raise ValueError(f"validation size {size} must be between 1 and {len(records) - 1}")
    labels = [[label for label in r.labels if label in known] for r in records]
    frequency = {name: 0 for name in classes}
    for clip_labels in labels:
        for name in clip_labels:
            frequency[name] += 1
    rarity = sorted(classes, key=lambda n: (frequency[n], n))
    base, extra = divmod(size, len(classes))
    target = {name: min(base + (1 if rank < extra else 0), frequency[name] // 2) for rank, name in enumerate(rarity)}
    labelled = [i for i, clip_labels in enumerate(labels) if clip_labels]
    multi = [i for i in labelled if len(labels[i]) > 1]
    multi_share = len(multi) / max(len(labelled), 1)
    mean_multi = sum(len(labels[i]) for i in multi) / max(len(multi), 1)
    expected_clips = sum(target.values()) / ((1 - multi_share) + multi_share * mean_multi)
    multi_target = int(round(multi_share * expected_clips))

    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    chosen: set[int] = set()
    count = {name: 0 for name in classes}

    def fits(i: int) -> bool:
        return all(count[name] < target[name] for name in labels[i])

    def take(i: int) -> None:
        chosen.add(i)
        for name in labels[i]:
            count[name] += 1

    taken_multi = 0
    for i in order:  # (1) multi-label clips, up to their share, never above a class's target
        if taken_multi >= multi_target:
            break
        if len(labels[i]) > 1 and fits(i):
            take(i)
            taken_multi += 1
    by_class: dict[str, list[int]] = {name: [] for name in classes}
    for i in order:
        if len(labels[i]) == 1:
            by_class[labels[i][0]].append(i)
    for name in rarity:  # (2) single-label clips fill every class to its target
        for i in by_class[name]:
            if count[name] >= target[name]:
                break
            if i not in chosen:
                take(i)
    for name in rarity:  # (3) a class still short (few single-label clips): any clip that fits
        if count[name] < target[name]:
            for i in order:
                if count[name] >= target[name]:
                    break
                if i not in chosen and name in labels[i] and fits(i):
                    take(i)
    for name in rarity:  # (4) still short: the clips with the fewest labels, even if they overfill others
        if count[name] < target[name]:
            for i in sorted((i for i in order if name in labels[i] and i not in chosen), key=lambda i: len(labels[i])):
                if count[name] >= target[name]:
                    break
                take(i)
    train = [r for i, r in enumerate(records) if i not in chosen]
    validation = [r for i, r in enumerate(records) if i in chosen]
    return train, validation


def split_figures(records: Sequence[ClipRecord], classes: Sequence[str] | None = None) -> dict[str, object]:
    """Clips, positives per class (min/max) and the labels-per-clip histogram of a split."""
    counts = class_counts(records, classes)
    histogram: dict[int, int] = defaultdict(int)
    for record in records:
        histogram[len(record.labels)] += 1
    multi = sum(n for k, n in histogram.items() if k > 1)
    return {
        "clips": len(records),
        "positives_min": min(counts.values()) if counts else 0,
        "positives_max": max(counts.values()) if counts else 0,
        "labels_per_clip": dict(sorted(histogram.items())),
        "multi_label_share": multi / max(len(records), 1),
        "positives": counts,
    }


def class_counts(records: Iterable[ClipRecord], classes: Sequence[str] | None = None) -> dict[str, int]:
    """Number of clips carrying each event."""
    counts = {name: 0 for name in classes or event_names()}
    for record in records:
        for name in record.labels:
            if name in counts:
                counts[name] += 1
    return counts


__all__ = ["VALIDATION_SIZE", "balanced_validation_split", "class_counts", "split_figures"]
