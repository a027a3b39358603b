"""Lightning data module over litdata shard folders (local folders or object-store URLs).

The same config trains from ``data/audioset/balanced_train.shards`` or from
``s3://bucket/audioset/balanced_train.shards``: only ``train_shards`` changes. See
:mod:`avtag.data.streaming` for what each mode guarantees under DDP.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

from avtag.data.datasets import ClipDataModule, SplitDataModule
from avtag.data.manifests import read_manifest
from avtag.data.streaming import ResumableLoader, ResumableSampler, ShardDataset, shard_stream


class ShardDataModule(SplitDataModule):
    """Train/validation/test shard folders -> int16 waveform batches.

    Args:
        train_shards, val_shards, test_shards: shard folders or URLs (``s3://``,
            ``gs://``, ``file://`` ...), written by ``avtag prepare ... --shards``.
        train_manifest: the training split's manifest (local JSONL, rows in shard
            order); gives the class-balanced sampler its label matrix without a pass
            over the shards. Optional: without it the labels are read from the shards.
        balanced / sampler: a balanced sampler ("kong" or "xu": random access,
            per-rank sampler streams); "shuffle" (``balanced: false``) streams chunks in
            a shuffled order (every clip once an epoch).
        drop_last: for ``balanced: false``; ``null`` is litdata's default (true under
            DDP: equal steps on every rank).
        cache_dir: where litdata keeps chunks fetched from a URL (its default when null).

    ``classes``, ``sample_rate`` and ``clip_seconds`` default to the module's, as in
    :class:`~avtag.data.datasets.ClipDataModule`; ``**loader``: the shared loader settings
    of :class:`~avtag.data.datasets.SplitDataModule`.
    """

    input_key = "waveform"
    source_label = source_field = "shards"

    def __init__(
        self,
        train_shards: str | None = None,
        val_shards: str | None = None,
        test_shards: str | None = None,
        train_manifest: str | None = None,
        batch_size: int = 32,  # 003, Implementation Details (GL-AT on AudioSet)
        sample_rate: int | None = None,
        clip_seconds: float | None = None,
        drop_last: bool | None = None,
        cache_dir: str | None = None,
        **loader: Any,
    ) -> None:
        super().__init__(batch_size, **loader)
        self.sources = {"train": train_shards, "val": val_shards, "test": test_shards}
        self.train_manifest = train_manifest
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.drop_last = drop_last
        self.cache_dir = cache_dir

    _resolve_from_module = ClipDataModule._resolve_from_module

    @property
    def clip_samples(self) -> int | None:
        return None if self.clip_seconds is None else int(round(self.clip_seconds * self.sample_rate))  # type: ignore[operator]

    def _build(self, split: str, source: str) -> ShardDataset:
        manifest = read_manifest(self.train_manifest) if split == "train" and self.train_manifest else None
        return ShardDataset(source, self.classes, self.sample_rate, self.clip_samples, manifest, self.cache_dir)  # type: ignore[arg-type]

    def train_dataloader(self) -> DataLoader:
        if self.sampler != "shuffle":
            dataset = self.datasets["train"]
            return ResumableLoader(dataset, ResumableSampler(self.balanced_sampler(dataset.targets)), **self.loader_options())
        from litdata import StreamingDataLoader

        stream = shard_stream(  # one seed for all ranks: litdata splits the shuffled chunks between them
            self._source("train"), self.classes, self.sample_rate, self.clip_samples,  # type: ignore[arg-type]
            seed=self.seed, shuffle=True, drop_last=self.drop_last, cache_dir=self.cache_dir,
        )
        options = self.loader_options()
        options.pop("persistent_workers")  # litdata's loader manages its own workers
        return StreamingDataLoader(stream, **options)


__all__ = ["ShardDataModule"]
