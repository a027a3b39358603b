"""Sharded streaming of packed clips for many GPUs, on Lightning's litdata engine.

One HDF5 pack on one disk does not feed eight nodes; litdata's chunked format does. The
prepare step writes, next to ``{split}.h5``, a folder ``{split}.shards/`` with litdata
chunks (``litdata.optimize``, manifest order kept) whose items are::

    {"index": manifest row, "key": clip id, "labels": "name;name", "sample_rate": int,
     "waveform": int16 samples}

Training reads that folder (or the same folder copied to an object store: ``s3://``,
``gs://``, ``azure://``; ``file:///path`` is litdata's ``local:`` remote, which goes
through the same download-and-cache path as a real bucket) in two ways:

* ``balanced: false`` (:func:`shard_stream` + ``litdata.StreamingDataLoader``): each DDP
  rank and worker reads its own chunks in a seeded, per-epoch shuffled order; an epoch
  sees every clip once across ranks (``drop_last: false``; under DDP litdata's default
  ``drop_last: true`` keeps the ranks' step counts equal by leaving out the remainder,
  fewer than ranks x workers x batch clips, a different one every epoch); a run resumed
  from a mid-epoch checkpoint continues where it stopped (Lightning saves the loader's
  ``state_dict``).
* ``balanced: true``: the data module's class-balanced sampler (Kong et al.'s balancing,
  :class:`~avtag.data.datasets.ClassBalancedSampler`: one stream per rank, seeded by
  seed, epoch and rank) draws indices, and :class:`ShardDataset` reads them by random
  access (local chunks are read in place; remote chunks are fetched into ``cache_dir``
  and kept up to ``max_cache_size``, so a balanced run from a bucket wants a cache as
  large as the split). :class:`ResumableLoader` makes that stream resumable mid-epoch.

Why litdata over WebDataset (scripts/bench_data.py, README "Streaming"): rank and worker
splitting, deterministic shuffling, exact mid-epoch resume and object-store reads are the
engine's own, where WebDataset leaves resume and exact-once epochs to the user; and
litdata's random access is what the balanced sampler needs.

Nothing read from the shards is executed: the deserialisers litdata could pick from the
index (pickle among them) are replaced by one that refuses, so only int, str and numpy
fields decode.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from avtag.atomic import write_json
from avtag.data.manifests import ClipRecord
from avtag.errors import AvtagError, InputFileError

SHARDS_FORMAT = "avtag-shards/1"
SHARDS_INFO = "avtag_shards.json"
DEFAULT_CHUNK_BYTES = "64MB"  # our documented choice: litdata's advice for streaming (tens of MB a chunk)
SAFE_FORMATS = ("int", "str", "no_header_numpy", "numpy")
CLOUD_PREFIXES = ("s3://", "gs://", "r2://", "azure://", "hf://", "local:")


# ----------------------------------------------------------------------------- writing


class _PackItem:
    """``optimize`` callable: manifest row -> one shard item read from the HDF5 pack."""

    def __init__(self, pack: str, keys: list[str], labels: list[str], sample_rate: int) -> None:
        self.pack, self.keys, self.labels, self.sample_rate = pack, keys, labels, sample_rate
        self._reader = None

    def __call__(self, row: int) -> dict[str, Any]:
        from avtag.data.pack import PackReader

        if self._reader is None:
            self._reader = PackReader(self.pack)
        key = self.keys[row]
        return {
            "index": int(row),
            "key": key,
            "labels": self.labels[row],
            "sample_rate": self.sample_rate,
            "waveform": self._reader.read_int16(key),
        }


def write_shards(
    pack: str | Path,
    records: Sequence[ClipRecord],
    out_dir: str | Path,
    chunk_bytes: str | int = DEFAULT_CHUNK_BYTES,
    workers: int = 1,
) -> Path:
    """Write the clips of ``records`` (all in ``pack``) as litdata chunks in manifest order.

    The folder appears complete or not at all (written beside it, then renamed).
    """
    from litdata import optimize

    from avtag.data.pack import PackReader

    out_dir = Path(out_dir).absolute()
    if not records:
        raise AvtagError(f"no clips to write into {out_dir}")
    with PackReader(pack) as reader:
        sample_rate = reader.sample_rate
    keys = [record.pack_key or record.id for record in records]
    labels = [";".join(record.labels) for record in records]
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    optimize(
        _PackItem(str(Path(pack).absolute()), keys, labels, sample_rate),
        list(range(len(records))),
        str(tmp),
        chunk_bytes=chunk_bytes,
        num_workers=max(1, int(workers)),
        keep_data_ordered=True,
        mode="overwrite",
        verbose=False,
        start_method="fork",
    )
    write_json(tmp / SHARDS_INFO, {"format": SHARDS_FORMAT, "num_clips": len(records), "sample_rate": sample_rate})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


# ----------------------------------------------------------------------------- reading


class _RefusedSerializer:
    """Stands in for every litdata deserialiser that is not plain data (pickle and the like)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def serialize(self, item: Any) -> Any:
        raise AvtagError(f"avtag shards never store {self.name!r} fields")

    def deserialize(self, data: bytes) -> Any:
        raise AvtagError(f"refusing to decode a {self.name!r} field from shards (only {', '.join(SAFE_FORMATS)})")

    def can_serialize(self, item: Any) -> bool:
        return False

    def setup(self, data_format: Any) -> None:
        return None


def safe_serializers() -> dict[str, Any]:
    """litdata's deserialiser table with everything but plain data refused."""
    from litdata.streaming.serializers import _SERIALIZERS

    return {name: serializer if name in SAFE_FORMATS else _RefusedSerializer(name) for name, serializer in _SERIALIZERS.items()}


def stream_source(source: str | Path) -> str:
    """A shard folder, ``file://`` URL or object-store URL, as litdata takes it.

    ``file:///data/x`` becomes ``local:/data/x`` (read through litdata's downloader and
    cache, as a bucket is); a plain path must hold the shards' ``index.json``.
    """
    text = str(source)
    if text.startswith("file://"):
        return "local:" + text[len("file://") :]
    if text.startswith(CLOUD_PREFIXES):
        return text
    path = Path(text).expanduser().absolute()
    if not (path / "index.json").is_file():
        raise InputFileError("not a shard folder (no index.json; run avtag prepare ... --shards)", path)
    return str(path)


class ShardItems:
    """litdata ``transform``: a stored item -> ``{"waveform" int16, "target", "index", "error"}``.

    ``labels`` names that are not in ``classes`` are an error, as in :class:`ClipDataset`.
    """

    def __init__(self, classes: Sequence[str], sample_rate: int, clip_samples: int | None) -> None:
        self.classes = list(classes)
        self.sample_rate = int(sample_rate)
        self.clip_samples = clip_samples
        self._column = {name: i for i, name in enumerate(self.classes)}

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if int(item["sample_rate"]) != self.sample_rate:
            raise AvtagError(
                f"shards hold {item['sample_rate']} Hz audio but the model reads {self.sample_rate} Hz "
                "(re-run avtag prepare with --sample-rate)"
            )
        samples = np.asarray(item["waveform"], dtype=np.int16)
        if self.clip_samples is not None and samples.shape[0] != self.clip_samples:
            fitted = np.zeros(self.clip_samples, dtype=np.int16)
            count = min(self.clip_samples, samples.shape[0])
            fitted[:count] = samples[:count]
            samples = fitted
        target = self.target(str(item["labels"]), str(item["key"]))
        return {"waveform": torch.from_numpy(samples), "target": torch.from_numpy(target), "index": int(item["index"]), "error": ""}

    def target(self, labels: str, key: str) -> np.ndarray:
        """Multi-hot vector of a ``;``-joined label list."""
        target = np.zeros(len(self.classes), dtype=np.float32)
        for name in filter(None, labels.split(";")):
            column = self._column.get(name)
            if column is None:
                raise AvtagError(f"clip {key!r} has label {name!r}, not in the class list of {len(self.classes)}")
            target[column] = 1.0
        return target


def _streaming_dataset(source: str, transform: ShardItems, cache_dir: str | None, **kwargs: Any):
    from litdata import StreamingDataset

    return StreamingDataset(
        stream_source(source), cache_dir=cache_dir, serializers=safe_serializers(), transform=transform, **kwargs
    )


def shard_stream(
    source: str | Path,
    classes: Sequence[str],
    sample_rate: int,
    clip_samples: int | None,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool | None = None,
    cache_dir: str | None = None,
):
    """A litdata ``StreamingDataset`` of training items: each rank/worker reads its own
    chunks, in an order fixed by ``seed`` and the epoch. ``drop_last=None``: litdata's
    default (True under DDP, so every rank takes the same number of steps)."""
    transform = ShardItems(classes, sample_rate, clip_samples)
    return _streaming_dataset(str(source), transform, cache_dir, shuffle=shuffle, seed=seed, drop_last=drop_last)


class ShardDataset(Dataset):
    """Random access to the items of a shard folder (map-style, for samplers).

    ``targets`` (the multi-hot matrix the class-balanced sampler needs) comes from the
    split's manifest when one is given (its rows are the shards' rows: the clip ids are
    checked as items are read); else it is read from the shards on first use.
    """

    def __init__(
        self,
        source: str | Path,
        classes: Sequence[str],
        sample_rate: int,
        clip_samples: int | None,
        manifest: Sequence[ClipRecord] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.source = str(source)
        self.transform = ShardItems(classes, sample_rate, clip_samples)
        self.cache_dir = cache_dir
        self.records = list(manifest) if manifest is not None else None
        self._dataset = None
        self._targets: np.ndarray | None = None
        self._length = len(self._stream())
        if self.records is not None and len(self.records) != self._length:
            raise AvtagError(f"{self.source} holds {self._length} clips but its manifest lists {len(self.records)}")

    def _stream(self):
        if self._dataset is None:
            self._dataset = _streaming_dataset(self.source, None, self.cache_dir, shuffle=False, drop_last=False)  # type: ignore[arg-type]
        return self._dataset

    def __len__(self) -> int:
        return self._length

    def raw(self, index: int) -> dict[str, Any]:
        return self._stream()[int(index)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.raw(index)
        if self.records is not None and raw["key"] != (self.records[index].pack_key or self.records[index].id):
            raise AvtagError(f"{self.source}: row {index} is {raw['key']!r}, its manifest says {self.records[index].id!r}")
        return self.transform(raw)

    @property
    def targets(self) -> np.ndarray:
        if self._targets is None:
            if self.records is not None:
                labelled = [(";".join(r.labels), r.id) for r in self.records]
            else:
                labelled = [(str(item["labels"]), str(item["key"])) for item in map(self.raw, range(len(self)))]
            targets = np.zeros((len(labelled), len(self.transform.classes)), dtype=np.float32)
            for row, (labels, key) in enumerate(labelled):
                targets[row] = self.transform.target(labels, key)
            self._targets = targets
        return self._targets

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"] = None  # each worker opens its own litdata reader
        return state


# ----------------------------------------------------------------------------- resumable sampling


class ResumableSampler(DistributedSampler):
    """Wraps a deterministic per-epoch sampler so that an epoch can start ``skip`` indices in.

    A :class:`DistributedSampler` (as the class-balanced sampler is) so Lightning neither
    wraps nor replaces it under DDP; ``set_epoch`` reaches the wrapped sampler.
    """

    def __init__(self, sampler: Sampler[int]) -> None:  # noqa: D107 - no DistributedSampler state needed
        self.sampler = sampler
        self.epoch = getattr(sampler, "epoch", 0)
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        for position, index in enumerate(self.sampler):
            if position >= skip:
                yield index


class ResumableLoader(DataLoader):
    """A map-style DataLoader that Lightning can checkpoint mid-epoch: its ``state_dict``
    is ``(epoch, batches yielded)``, and a loaded state makes the next pass over the same
    epoch skip those batches (the sampler's stream depends only on seed, epoch and rank)."""

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._yielded = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        self._yielded = 0
        if self._resume is not None and self._resume["epoch"] == sampler.epoch:
            self._yielded = self._resume["batches"]
            sampler.skip = self._yielded * int(self.batch_size or 1)
        self._resume = None
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._yielded)}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


def read_shards_info(folder: str | Path) -> dict[str, Any]:
    """The ``avtag_shards.json`` of a local shard folder (format, clips, sample rate)."""
    from avtag.validate import read_json

    path = Path(folder) / SHARDS_INFO
    info = read_json(path, "a shard folder description")
    if not isinstance(info, dict) or info.get("format") != SHARDS_FORMAT:
        raise InputFileError(f"not an avtag shard folder (expected format {SHARDS_FORMAT})", path)
    return info


def shard_index_formats(folder: str | Path) -> list[str]:
    """The field formats litdata's ``index.json`` declares (all must be plain data)."""
    from avtag.validate import read_json

    index = read_json(Path(folder) / "index.json", "a litdata index")
    return [str(f) for f in index["config"]["data_format"]]


__all__ = [
    "ResumableLoader",
    "ResumableSampler",
    "ShardDataset",
    "ShardItems",
    "read_shards_info",
    "safe_serializers",
    "shard_stream",
    "stream_source",
    "write_shards",
]
