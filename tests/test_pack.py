"""int16 batches: the pack's samples travel as int16 and the front-end converts them on its device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avtag.audio.features import LogMelFrontEnd
from avtag.data.datasets import ClipDataset
from avtag.data.manifests import ClipRecord
from avtag.data.pack import INT16_SCALE, PackReader, to_int16, write_pack

RATE = 8000


def _pack(tmp_path, lengths=(RATE, RATE // 2, 2 * RATE), rate=RATE):
    rng = np.random.default_rng(0)
    waves = [np.clip(rng.standard_normal(n) * 0.3, -1, 1).astype(np.float32) for n in lengths]
    write_pack(tmp_path / "p.h5", ((f"c{i}", w) for i, w in enumerate(waves)), rate)
    return waves


def test_read_int16_pads_and_crops_while_reading(tmp_path):
    waves = _pack(tmp_path)
    reader = PackReader(tmp_path / "p.h5")
    assert np.array_equal(reader.read_int16("c0"), to_int16(waves[0]))
    short = reader.read_int16("c1", RATE)  # half a second padded to one
    assert short.dtype == np.int16 and short.shape == (RATE,)
    assert np.array_equal(short[: RATE // 2], to_int16(waves[1])) and not short[RATE // 2 :].any()
    assert np.array_equal(reader.read_int16("c2", RATE), to_int16(waves[2])[:RATE])  # cropped from the start


def test_dataset_ships_int16_only_when_asked_and_packed_at_its_rate(tmp_path):
    _pack(tmp_path)
    records = [ClipRecord(id=f"c{i}", pack="p.h5") for i in range(3)]
    as_int16 = ClipDataset(records, RATE, 1.0, [], base_dir=tmp_path, int16=True)
    as_float = ClipDataset(records, RATE, 1.0, [], base_dir=tmp_path)
    resampled = ClipDataset(records, RATE // 2, 1.0, [], base_dir=tmp_path, int16=True)
    assert as_int16.ships_int16 and not as_float.ships_int16 and not resampled.ships_int16
    assert resampled[0]["waveform"].dtype == torch.float32
    batch = next(iter(DataLoader(as_int16, batch_size=3)))
    assert batch["waveform"].dtype == torch.int16 and batch["waveform"].shape == (3, RATE)
    floats = next(iter(DataLoader(as_float, batch_size=3)))["waveform"]
    assert torch.allclose(batch["waveform"].float() / INT16_SCALE, floats, atol=0)


def test_frontend_converts_int16_exactly_like_the_float_path(tmp_path):
    frontend = LogMelFrontEnd(sample_rate=RATE, n_fft=256, win_length=256, hop_length=80, n_mels=16, clip_seconds=1.0)
    ints = torch.from_numpy(to_int16(np.random.default_rng(1).standard_normal((2, RATE)) * 0.2))
    from_int16 = frontend(ints)
    from_float = frontend(ints.float() / INT16_SCALE)
    assert from_int16.dtype == torch.float32
    assert torch.allclose(from_int16, from_float, atol=1e-6)
    with pytest.raises(ValueError):
        frontend(ints.reshape(1, 2, RATE))


@pytest.mark.parametrize("workers", [0, 1])
def test_int16_batches_are_read_in_place_and_equal_the_per_clip_items(tmp_path, workers):
    from avtag.data.datasets import ClipBatch, collate_clips

    _pack(tmp_path)
    records = [ClipRecord(id=f"c{i}", labels=["x"] if i else [], pack="p.h5") for i in range(3)]
    dataset = ClipDataset(records, RATE, 1.0, ["x"], base_dir=tmp_path, int16=True)
    items = dataset.__getitems__([2, 0, 1])
    assert isinstance(items, ClipBatch) and items.batch["waveform"].shape == (3, RATE)
    # per-clip items are copies, never views of a buffer that a later batch reuses
    assert items[0]["waveform"].data_ptr() != items.batch["waveform"].data_ptr()
    assert torch.equal(items[0]["waveform"], items.batch["waveform"][0]) and items[0]["index"] == 2
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_clips, num_workers=workers)))
    expected = torch.stack([dataset[i]["waveform"] for i in range(3)])
    assert torch.equal(batch["waveform"], expected) and batch["index"].tolist() == [0, 1, 2]
    assert batch["target"].tolist() == [[0.0], [1.0], [1.0]]
    plain = next(iter(DataLoader(dataset, batch_size=3)))  # the default collation still works on it
    assert torch.equal(plain["waveform"], expected)
