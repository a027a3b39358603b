"""The fast training data path: direct pack reads equal h5py's, batch slots are reused only
once let go, and runs of adjacent clips are read whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import avtag.data.pack as pack_module
from avtag.data.batch_slots import SLOTS
from avtag.data.datasets import ClipDataset, collate_clips
from avtag.data.manifests import ClipRecord
from avtag.data.pack import PackReader, write_pack

RATE = 800
CLIPS = 40


@pytest.fixture()
def small_chunks(monkeypatch):
    """Packs written with 64-sample chunks: many chunks, and HDF5's index blocks between them."""
    monkeypatch.setattr(pack_module, "_CHUNK", 64)


def _write(tmp_path, lengths, compression=None):
    rng = np.random.default_rng(0)
    clips = [(f"c{i}", (rng.standard_normal(n) * 3000).astype(np.int16)) for i, n in enumerate(lengths)]
    write_pack(tmp_path / "p.h5", clips, RATE, compression=compression)
    return dict(clips)


def _h5py_reads(path, keys):
    import h5py

    with h5py.File(path, "r") as handle:
        waveforms, offsets, lengths = handle["waveforms"], handle["offsets"][()], handle["lengths"][()]
        return {key: waveforms[offsets[i] : offsets[i] + lengths[i]] for i, key in enumerate(keys)}


def test_direct_reads_equal_h5py_reads_across_the_chunk_layout_breaks(tmp_path, small_chunks):
    clips = _write(tmp_path, [RATE + 37 * i for i in range(CLIPS)])
    reader = PackReader(tmp_path / "p.h5")
    reader._handle()
    assert reader._runs is not None and len(reader._runs.run_chunks) > 1  # chunks are not one run
    expected = _h5py_reads(tmp_path / "p.h5", list(clips))
    for key, samples in clips.items():
        assert np.array_equal(reader.read_int16(key), samples) and np.array_equal(expected[key], samples)
        padded = reader.read_int16(key, 2 * RATE)
        assert np.array_equal(padded[: len(samples)], samples[: 2 * RATE]) and not padded[len(samples) :].any()
    start, _ = reader.location("c3")
    total = sum(len(clips[f"c{i}"]) for i in (3, 4, 5))
    run = reader.read_run(start, total, np.empty(total, dtype=np.int16))
    assert np.array_equal(run, np.concatenate([clips["c3"], clips["c4"], clips["c5"]]))


def test_compressed_packs_fall_back_to_h5py_reads(tmp_path, small_chunks):
    clips = _write(tmp_path, [RATE] * 4, compression="gzip")
    reader = PackReader(tmp_path / "p.h5")
    reader._handle()
    assert reader._runs is None
    assert all(np.array_equal(reader.read_int16(key), samples) for key, samples in clips.items())


def test_truncated_pack_is_a_one_line_error(tmp_path):
    _write(tmp_path, [RATE] * 4)
    path = tmp_path / "p.h5"
    reader = PackReader(path)
    reader._handle()
    assert reader._runs is not None
    with open(path, "r+b") as handle:
        handle.truncate(reader._runs.run_offsets[0] + RATE)  # drop most of the samples
    from avtag.errors import InputFileError

    with pytest.raises(InputFileError, match="truncated"):
        reader.read_int16("c3")


def _dataset(tmp_path, seconds=1.0):
    clips = _write(tmp_path, [RATE] * CLIPS)
    records = [ClipRecord(id=key, labels=["x"] if i % 2 else [], pack="p.h5") for i, key in enumerate(clips)]
    dataset = ClipDataset(records, RATE, seconds, ["x"], base_dir=tmp_path, int16=True)
    return dataset, torch.from_numpy(np.stack(list(clips.values())))


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_that_are_kept_are_never_overwritten(tmp_path, workers):
    """A consumer that keeps every batch (more than there are slots) still sees each one intact."""
    dataset, expected = _dataset(tmp_path)
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=workers, collate_fn=collate_clips,
                        persistent_workers=workers > 0)
    for _ in range(2):
        kept = list(loader)
        assert len(kept) > SLOTS
        for batch in kept:
            assert batch["waveform"].dtype == torch.int16
            assert torch.equal(batch["waveform"], expected[batch["index"]])
            assert batch["target"][:, 0].tolist() == [float(i % 2) for i in batch["index"].tolist()]


@pytest.mark.parametrize("workers", [0, 1])
def test_slots_are_reused_once_let_go(tmp_path, workers):
    dataset, expected = _dataset(tmp_path)
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=workers, collate_fn=collate_clips,
                        persistent_workers=workers > 0)
    buffers = set()
    for _ in range(3):
        for batch in loader:
            assert torch.equal(batch["waveform"], expected[batch["index"]])
            buffers.add(batch["waveform"].data_ptr())
            del batch
    assert len(buffers) <= SLOTS  # 3 epochs of 14 batches went through the same few buffers


def test_unshuffled_batches_are_read_as_runs(tmp_path, monkeypatch):
    dataset, expected = _dataset(tmp_path)
    runs = []
    original = PackReader.read_run
    monkeypatch.setattr(PackReader, "read_run", lambda self, start, count, out: runs.append(count) or original(self, start, count, out))
    batches = list(DataLoader(dataset, batch_size=8, shuffle=False, collate_fn=collate_clips))
    assert runs == [8 * RATE] * 5
    assert torch.equal(torch.cat([b["waveform"] for b in batches]), expected)
    mixed = dataset.__getitems__([5, 6, 7, 2, 9])  # runs inside one batch: 5-7, then 2 and 9 alone
    assert runs[5:] == [3 * RATE]
    assert torch.equal(mixed.batch["waveform"], expected[[5, 6, 7, 2, 9]])


def test_other_collate_functions_get_copies(tmp_path):
    dataset, expected = _dataset(tmp_path)
    plain = list(DataLoader(dataset, batch_size=4, shuffle=False, num_workers=1))  # torch's default collation
    assert all(torch.equal(b["waveform"], expected[b["index"]]) for b in plain)


def test_the_module_gives_an_int16_batch_the_float_batch_outputs_and_loss(tmp_path):
    """The LightningModule converts int16 batches on its device exactly as the float path."""
    from avtag.data.pack import INT16_SCALE
    from avtag.train import TaggingModule

    rate = 8000
    rng = np.random.default_rng(2)
    write_pack(tmp_path / "p.h5", [(f"c{i}", (rng.standard_normal(rate) * 0.2).clip(-1, 1)) for i in range(3)], rate)
    records = [ClipRecord(id=f"c{i}", labels=["a"] if i else ["b"], pack="p.h5") for i in range(3)]
    dataset = ClipDataset(records, rate, 1.0, ["a", "b"], base_dir=tmp_path, int16=True)
    torch.manual_seed(0)
    module = TaggingModule(model_args={"conv_channels": [4, 4, 4, 4], "rnn_hidden": 4},
                           frontend_args={"sample_rate": rate, "clip_seconds": 1.0}, classes=["a", "b"]).eval()
    ints = collate_clips(dataset.__getitems__([0, 1, 2]))
    floats = ClipDataset(records, rate, 1.0, ["a", "b"], base_dir=tmp_path)  # the float32 path
    as_float = torch.stack([floats[i]["waveform"] for i in range(3)])
    assert ints["waveform"].dtype == torch.int16 and torch.equal(ints["waveform"].float() / INT16_SCALE, as_float)
    with torch.no_grad():
        from_ints, from_floats = module(ints["waveform"]), module(as_float)
        assert torch.allclose(from_ints.clip_probs, from_floats.clip_probs, atol=1e-6)
        loss_ints = module.model.loss(from_ints, ints["target"])
        assert torch.allclose(loss_ints, module.model.loss(from_floats, ints["target"]), atol=1e-6)
