#!/usr/bin/env python
"""Clips/s the training data paths deliver, against raw reads of the same clips.

    python scripts/bench_data.py                         # 1,500 clips of 10 s at 20 kHz, 0/1/2 workers
    python scripts/bench_data.py --clips 300 --workers 0 1 --webdataset

Writes a synthetic pack (int16, :mod:`avtag.data.pack`) and its litdata shards
(:mod:`avtag.data.streaming`) into ``--dir``, warms the page cache with one pass, then
times, for each worker count:

* ``raw h5py``: one slice read per clip from the open file, nothing else (the floor);
* ``raw preadv``: the same clips' bytes read from the file with one ``preadv`` per run of
  adjacent chunks into one reused buffer (what :class:`PackReader` does when the layout
  allows: the physical floor, for reference);
* ``HDF5 int16``: :class:`ClipDataset` (int16 batches, the training default) + DataLoader
  with the training loader's settings (persistent workers, reused batch slots);
* ``HDF5 float32``: the same with ``int16=False`` (the conversion on the CPU, as before);
* ``litdata stream``: ``StreamingDataLoader`` over the shards (shuffled chunks);
* ``litdata balanced``: the class-balanced sampler over random access to the shards;
* ``webdataset`` (with ``--webdataset``, if installed): tar shards of the same clips.

Each row gives clips/s (the best of ``--repeats`` passes after a warm-up pass), the ratio to
the raw floor, and the peak RSS of one loader worker
(VmHWM read in the worker at every batch; the main process when there are no workers).
"""

from __future__ import annotations

import argparse
import tempfile
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

CLASSES = [f"class{i}" for i in range(10)]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import os

    return f"{platform.node() or 'host'}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))


class RssCollate:
    """The training collation (:func:`avtag.data.datasets.collate_clips`) that also
    reports the collating process's peak RSS (kB)."""

    def __call__(self, items):
        from avtag.data.batch_slots import SlotBatch
        from avtag.data.datasets import collate_clips

        batch = collate_clips(items)
        if isinstance(batch, SlotBatch):  # a reused slot on its way out of a worker
            batch.fields["rss_kb"] = _rss_kb()
            return batch
        batch = dict(batch)
        batch["rss_kb"] = torch.tensor(_rss_kb())
        return batch


def make_data(folder: Path, clips: int, seconds: float, rate: int, shards: bool = True):
    """A synthetic pack + manifest records (+ litdata shards) of ``clips`` noise clips."""
    from avtag.data.manifests import ClipRecord
    from avtag.data.pack import PackWriter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    samples = int(seconds * rate)
    records = [ClipRecord(id=f"clip{i:06d}", labels=[CLASSES[i % len(CLASSES)]], pack="pack.h5") for i in range(clips)]
    if not (folder / "pack.h5").is_file():
        with PackWriter(folder / "pack.h5", rate) as writer:
            block = (rng.standard_normal(samples) * 3000).astype(np.int16)
            for i, record in enumerate(records):
                writer.add(record.id, np.roll(block, i))
    if shards and not (folder / "pack.shards" / "index.json").is_file():
        from avtag.data.streaming import write_shards

        write_shards(folder / "pack.h5", records, folder / "pack.shards")
    return records


def _timed(batches, clips: int) -> tuple[float, int]:
    started, seen, rss = time.perf_counter(), 0, 0
    for batch in batches:
        seen += len(batch["index"])
        rss = max(rss, int(batch.get("rss_kb", 0)))
        if seen >= clips:
            break
    return seen / (time.perf_counter() - started), rss or _rss_kb()


def raw_reads(folder: Path, records, clips: int) -> float:
    import h5py

    with h5py.File(folder / "pack.h5", "r") as handle:
        waveforms, offsets, lengths = handle["waveforms"], handle["offsets"][()], handle["lengths"][()]
        started = time.perf_counter()
        for i in range(clips):
            waveforms[offsets[i] : offsets[i] + lengths[i]]
        return clips / (time.perf_counter() - started)


def raw_preads(folder: Path, records, clips: int) -> float:
    from avtag.data.pack import PackReader

    with PackReader(folder / "pack.h5") as reader:
        locations = [reader.location(record.id) for record in records[:clips]]
        buffer = np.empty(max(length for _, length in locations), dtype=np.int16)
        if reader._runs is None:
            return float("nan")  # the layout does not allow direct reads
        started = time.perf_counter()
        for start, length in locations:
            reader._read_samples(start, length, buffer[:length])
        return clips / (time.perf_counter() - started)


def loaders(folder: Path, records, rate: int, seconds: float, batch: int, workers: int, webdataset: bool):
    """(name, iterable of batches) for every path measured."""
    from litdata import StreamingDataLoader

    from avtag.data.datasets import ClassBalancedSampler, ClipDataset
    from avtag.data.streaming import ResumableLoader, ResumableSampler, ShardDataset, shard_stream

    common = dict(batch_size=batch, num_workers=workers, collate_fn=RssCollate(), persistent_workers=workers > 0)
    for name, int16 in (("HDF5 int16", True), ("HDF5 float32", False)):
        dataset = ClipDataset(records, rate, seconds, CLASSES, base_dir=folder, int16=int16)
        yield name, DataLoader(dataset, shuffle=True, **common)
    stream = shard_stream(folder / "pack.shards", CLASSES, rate, int(seconds * rate), seed=0)
    yield "litdata stream", StreamingDataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=RssCollate())
    shards = ShardDataset(folder / "pack.shards", CLASSES, rate, int(seconds * rate), records)
    sampler = ResumableSampler(ClassBalancedSampler(shards.targets, batch))
    yield "litdata balanced", ResumableLoader(shards, sampler, **common)
    if webdataset:
        yield "webdataset", webdataset_loader(folder, records, batch, workers)


def webdataset_loader(folder: Path, records, batch: int, workers: int):
    """WebDataset over tar shards of the same clips (written once), for the comparison."""
    import webdataset as wds

    from avtag.data.pack import PackReader

    tars = folder / "wds"
    if not tars.is_dir():
        tars.mkdir()
        with PackReader(folder / "pack.h5") as pack, wds.ShardWriter(str(tars / "shard-%05d.tar"), maxsize=64e6, verbose=0) as sink:
            for i, record in enumerate(records):
                sink.write({"__key__": record.id, "i16": pack.read_int16(record.id).tobytes(), "idx": str(i).encode()})
    urls = sorted(str(p) for p in tars.glob("shard-*.tar"))

    def item(sample):
        return {"waveform": torch.from_numpy(np.frombuffer(sample["i16"], dtype=np.int16).copy()),
                "index": int(sample["idx"])}

    pipeline = wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node, empty_check=False).map(item)
    return DataLoader(pipeline, batch_size=batch, num_workers=workers, collate_fn=RssCollate())


def run(folder: Path, clips: int, seconds: float, rate: int, batch: int, workers: list[int], webdataset: bool,
        repeats: int = 3) -> list[dict]:
    records = make_data(folder, clips, seconds, rate)
    raw_reads(folder, records, clips)  # warm the page cache
    floor = max(raw_reads(folder, records, clips) for _ in range(repeats))  # best of N, as every row
    rows = [{"path": "raw h5py reads", "workers": "-", "clips_s": floor, "ratio": 1.0, "rss_mb": _rss_kb() / 1024}]
    preads = max(raw_preads(folder, records, clips) for _ in range(repeats))
    rows.append({"path": "raw preadv reads", "workers": "-", "clips_s": preads, "ratio": preads / floor, "rss_mb": _rss_kb() / 1024})
    for count in workers:
        for name, batches in loaders(folder, records, rate, seconds, batch, count, webdataset):
            _timed(batches, clips)  # start workers, fill their batch slots: one warm-up pass
            speed, rss = max(_timed(batches, clips) for _ in range(repeats))  # best pass: the least disturbed
            rows.append({"path": name, "workers": count, "clips_s": speed, "ratio": speed / floor, "rss_mb": rss / 1024})
            del batches
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| path | workers | clips/s | x raw floor | worker peak RSS (MB) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['path']} | {r['workers']} | {r['clips_s']:.0f} | {r['ratio']:.2f} | {r['rss_mb']:.0f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "avtag_bench_data",
                        help="where the pack and shards go (default: the system temp folder)")
    parser.add_argument("--clips", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sample-rate", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--webdataset", action="store_true", help="also measure WebDataset on the same clips")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per row after the warm-up; the best is reported (shared machines are noisy)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = args.dir / f"{args.clips}x{args.seconds:g}s_{args.sample_rate}"
    rows = run(folder, args.clips, args.seconds, args.sample_rate, args.batch_size, args.workers, args.webdataset, args.repeats)
    print(f"{args.clips} clips of {args.seconds:g} s at {args.sample_rate} Hz, batch {args.batch_size}, page cache warm, "
          f"best of {args.repeats} passes; {machine()}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
