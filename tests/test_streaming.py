"""Sharded streaming (litdata): shards written from a pack, random access, URL sources,
2 gloo processes (disjoint coverage, determinism, mid-epoch resume), balanced resume,
and a data module that trains a tiny model."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

pytest.importorskip("litdata")

from avtag.data.datasets import ClassBalancedSampler  # noqa: E402
from avtag.data.manifests import ClipRecord  # noqa: E402
from avtag.data.pack import to_int16, write_pack  # noqa: E402
from avtag.data.streaming import (  # noqa: E402
    ResumableLoader,
    ResumableSampler,
    ShardDataset,
    read_shards_info,
    shard_index_formats,
    shard_stream,
    stream_source,
    write_shards,
)
from avtag.errors import AvtagError, InputFileError  # noqa: E402

RATE = 4000
CLASSES = ["a", "b", "c"]
N_CLIPS = 60


def _records(n=N_CLIPS):
    return [ClipRecord(id=f"k{i:03d}", labels=[CLASSES[i % 3]] + (["c"] if i % 7 == 0 else []), pack="p.h5") for i in range(n)]


def _waves(n=N_CLIPS):
    rng = np.random.default_rng(0)
    return [np.clip(rng.standard_normal(RATE // 2 + 13 * i) * 0.2, -1, 1) for i in range(n)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    waves = _waves()
    write_pack(root / "p.h5", ((r.id, w) for r, w in zip(_records(), waves, strict=True)), RATE)
    folder = write_shards(root / "p.h5", _records(), root / "train.shards", chunk_bytes=40_000)
    return folder, waves


def test_shards_keep_manifest_order_and_samples_and_store_plain_data_only(shards):
    folder, waves = shards
    assert read_shards_info(folder) == {"format": "avtag-shards/1", "num_clips": N_CLIPS, "sample_rate": RATE}
    assert len(list(folder.glob("chunk-*.bin"))) > 3  # several chunks, so ranks get different ones
    assert all(f.split(":")[0] in ("int", "str", "no_header_numpy", "numpy") for f in shard_index_formats(folder))
    dataset = ShardDataset(folder, CLASSES, RATE, RATE, _records())
    for i in (0, 7, N_CLIPS - 1):
        item = dataset[i]
        expected = to_int16(waves[i])[:RATE]
        assert item["index"] == i and item["waveform"].dtype == torch.int16 and item["waveform"].shape == (RATE,)
        assert torch.equal(item["waveform"][: len(expected)], torch.from_numpy(expected))
        assert not item["waveform"][len(expected) :].any()  # zero-padded to the clip length
    assert dataset.targets[7].tolist() == [0.0, 1.0, 1.0]
    assert np.array_equal(ShardDataset(folder, CLASSES, RATE, RATE).targets, dataset.targets)  # labels from the shards


def test_bad_sources_and_mismatches_are_one_line_errors(shards, tmp_path):
    folder, _ = shards
    with pytest.raises(InputFileError, match="no index.json"):
        stream_source(tmp_path)
    with pytest.raises(AvtagError, match="manifest lists 59"):
        ShardDataset(folder, CLASSES, RATE, RATE, _records(59))
    with pytest.raises(AvtagError, match="not in the class list"):
        ShardDataset(folder, ["a", "b"], RATE, RATE)[2]
    with pytest.raises(AvtagError, match="re-run avtag prepare with --sample-rate"):
        ShardDataset(folder, CLASSES, 2 * RATE, RATE)[0]


def test_a_pickled_field_is_refused(tmp_path):
    from litdata import optimize

    optimize(_pickled_item, [0, 1], str(tmp_path / "evil"), chunk_bytes="1MB", num_workers=1, verbose=False,
             start_method="fork")
    assert any(f.startswith("pickle") for f in shard_index_formats(tmp_path / "evil"))
    with pytest.raises(AvtagError, match="refusing to decode a 'pickle' field"):
        ShardDataset(tmp_path / "evil", CLASSES, RATE, None).raw(0)


def _pickled_item(i):
    return {"index": i, "payload": {1, 2, 3}}  # a set: litdata falls back to pickle


def test_file_url_reads_through_the_remote_path_like_the_folder(shards, tmp_path):
    folder, _ = shards
    assert stream_source(f"file://{folder}") == f"local:{folder}"
    assert stream_source("s3://bucket/train.shards") == "s3://bucket/train.shards"
    remote = ShardDataset(f"file://{folder}", CLASSES, RATE, RATE, cache_dir=str(tmp_path / "cache"))
    local = ShardDataset(folder, CLASSES, RATE, RATE)
    for i in (3, 41):
        assert torch.equal(remote[i]["waveform"], local[i]["waveform"])
    assert any((tmp_path / "cache").rglob("chunk-*.bin"))  # fetched into the cache, as from a bucket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_disjoint_complete_deterministic_and_resumable(shards, tmp_path):
    import torch.multiprocessing as mp

    folder, _ = shards
    from _streaming_ranks import rank_main  # a light module: each spawned rank imports only what it needs

    mp.spawn(rank_main, args=(2, _free_port(), str(folder), str(tmp_path)), nprocs=2, join=True)
    ranks = torch.load(tmp_path / "ranks.pt", weights_only=True)
    seen = [[i for batch in r["full"] for i in batch] for r in ranks]
    assert not set(seen[0]) & set(seen[1])  # each rank reads its own chunks
    assert sorted(seen[0] + seen[1]) == list(range(N_CLIPS))  # every clip once across ranks
    assert all(r["full"] == r["again"] for r in ranks)  # same seed, same epoch: same stream
    assert seen[0] != sorted(seen[0])  # and it is shuffled
    for r in ranks:  # mid-epoch resume continues exactly where it stopped
        assert r["head"] + r["tail"] == r["full"]


def test_balanced_stream_resumes_mid_epoch(shards):
    folder, _ = shards
    dataset = ShardDataset(folder, CLASSES, RATE, RATE, _records())

    def loader():
        sampler = ClassBalancedSampler(dataset.targets, batch_size=6, num_batches=5, seed=2)
        sampler.set_epoch(1)
        return ResumableLoader(dataset, ResumableSampler(sampler), batch_size=6)

    full = [b["index"].tolist() for b in loader()]
    first = loader()
    head = [b["index"].tolist() for _, b in zip(range(2), first)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [b["index"].tolist() for b in resumed] == full
    counts = dataset.targets[[i for batch in full for i in batch]].sum(axis=0)
    assert counts.min() >= 8  # balanced: 30 draws over 3 classes (c is also on every 7th clip)


@pytest.mark.parametrize("balanced", [True, False])
def test_shard_data_module_trains_a_tiny_model(shards, tmp_path, balanced):
    import lightning as L

    from avtag.data.shard_module import ShardDataModule
    from avtag.train import TaggingModule

    folder, _ = shards
    module = TaggingModule(
        model_args={"conv_channels": [4, 4, 4, 4], "rnn_hidden": 4},
        frontend_args={"sample_rate": RATE, "clip_seconds": 1.0},
        classes=CLASSES,
    )
    data = ShardDataModule(train_shards=str(folder), val_shards=str(folder), batch_size=8, num_workers=0,
                           balanced=balanced, epoch_batches=2)
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2
    assert trainer.train_dataloader.state_dict()  # Lightning can checkpoint the loader mid-epoch


def test_two_workers_of_one_process_split_the_chunks(shards):
    from litdata import StreamingDataLoader

    folder, _ = shards
    stream = shard_stream(folder, CLASSES, RATE, RATE, seed=5, shuffle=True, drop_last=False)
    seen = [i for batch in StreamingDataLoader(stream, batch_size=4, num_workers=2) for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(N_CLIPS))
