"""Mono waveforms packed as int16 into one HDF5 file, read back as float32.

Reading 50,000 small audio files is slow on most file systems; one pack per split is read
with one open file and one slice per clip.

Layout (``format`` attribute ``"avtag-pack/1"``)::

    /waveforms   int16   (total_samples,)  every clip's samples, concatenated, chunked
    /keys        utf-8   (num_clips,)      clip keys (canonical clip ids), unique
    /offsets     int64   (num_clips,)      first sample of each clip in /waveforms
    /lengths     int64   (num_clips,)      samples of each clip
    attrs: format="avtag-pack/1", sample_rate=<int>, num_clips=<int>

Samples are stored as ``round(x * 32767)`` after clipping to [-1, 1] and read back as
``int16 / 32767`` (float32), so a full-scale value survives the round trip.

Choices where the paper is silent: int16 (as the clips are distributed) rather than float;
no compression by default (decoding speed over disk size; ``compression="gzip"`` is offered);
chunks of 65,536 samples (~3 s at 20 kHz) so one clip touches few chunks.

Direct reads (our documented choice, measured in scripts/bench_data.py): when the waveforms
are stored unfiltered, little-endian and in full chunks, each process maps chunks to file
offsets once (HDF5's own chunk index, ``H5Dchunk_iter``, 4 us a chunk) and reads a clip with
one ``preadv`` per run of adjacent chunks straight into the caller's buffer, 2x faster than
h5py's slice read here (no per-chunk selection, no temporary). A self-check against h5py at
open, and any compressed or partial layout, fall back to h5py's reads.
"""

from __future__ import annotations

import bisect
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from avtag.errors import InputFileError

PACK_FORMAT = "avtag-pack/1"
INT16_SCALE = 32767.0
_CHUNK = 1 << 16


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """Float waveform in [-1, 1] (clipped) to int16."""
    samples = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)
    return np.round(samples * INT16_SCALE).astype(np.int16)


class PackWriter:
    """Append clips to a new pack; use as a context manager (the index is written on close)."""

    def __init__(self, path: str | Path, sample_rate: int, compression: str | None = None):
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = h5py.File(self._tmp, "w")
        self._file.attrs["format"] = PACK_FORMAT
        self._file.attrs["sample_rate"] = int(sample_rate)
        self._waveforms = self._file.create_dataset(
            "waveforms", shape=(0,), maxshape=(None,), dtype=np.int16, chunks=(_CHUNK,), compression=compression
        )
        self._keys: list[str] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._seen: set[str] = set()
        self._total = 0

    def add(self, key: str, waveform: np.ndarray) -> None:
        """Append one mono clip (float in [-1, 1], or int16 as is)."""
        if key in self._seen:
            raise ValueError(f"duplicate pack key {key!r}")
        data = np.asarray(waveform)
        if data.ndim != 1:
            raise ValueError(f"pack clips must be mono 1-D arrays, got shape {data.shape} for {key!r}")
        samples = data if data.dtype == np.int16 else to_int16(data)
        self._waveforms.resize((self._total + len(samples),))
        self._waveforms[self._total :] = samples
        self._seen.add(key)
        self._keys.append(key)
        self._offsets.append(self._total)
        self._lengths.append(len(samples))
        self._total += len(samples)

    def close(self) -> Path:
        """Write the index and move the finished pack into place."""
        import h5py

        if self._file is None:
            return self.path
        self._file.create_dataset("keys", data=np.array(self._keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
        self._file.create_dataset("offsets", data=np.array(self._offsets, dtype=np.int64))
        self._file.create_dataset("lengths", data=np.array(self._lengths, dtype=np.int64))
        self._file.attrs["num_clips"] = len(self._keys)
        self._file.close()
        self._file = None
        self._tmp.replace(self.path)
        return self.path

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._file is not None:  # failed: leave no half-written pack behind
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)


def write_pack(
    path: str | Path, clips: Iterable[tuple[str, np.ndarray]], sample_rate: int, compression: str | None = None
) -> Path:
    """Write ``(key, mono waveform)`` pairs to a new pack at ``path``."""
    with PackWriter(path, sample_rate, compression=compression) as writer:
        for key, waveform in clips:
            writer.add(key, waveform)
    return Path(path)


class PackReader:
    """Random access to a pack; safe to hand to DataLoader workers.

    The HDF5 file is opened lazily, once per process (a handle inherited through ``fork`` or
    pickling is never reused), and the index is loaded into memory on first use.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError("no such audio pack", self.path)
        self._file = None
        self._waveforms = None
        self._pid: int | None = None
        self._index: dict[str, tuple[int, int]] | None = None
        self._sample_rate: int | None = None
        self._fd: int | None = None
        self._runs: _ChunkRuns | None = None

    def _handle(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            try:
                handle = h5py.File(self.path, "r")
            except OSError as err:
                raise InputFileError(f"not a readable HDF5 pack ({err})", self.path) from None
            if handle.attrs.get("format") != PACK_FORMAT or "waveforms" not in handle:
                handle.close()
                raise InputFileError(f"not an avtag audio pack (expected format {PACK_FORMAT})", self.path)
            self._file, self._pid = handle, os.getpid()
            self._waveforms = handle["waveforms"]  # one dataset lookup per process, not per clip
            self._fd, self._runs = None, _ChunkRuns.of(handle, self._waveforms)
            if self._runs is not None:
                self._fd = os.open(self.path, os.O_RDONLY)
                if not self._direct_reads_agree():
                    os.close(self._fd)
                    self._fd, self._runs = None, None
            if self._index is None:
                keys = [k.decode() if isinstance(k, bytes) else str(k) for k in handle["keys"][()]]
                offsets, lengths = handle["offsets"][()], handle["lengths"][()]
                self._index = {k: (int(o), int(n)) for k, o, n in zip(keys, offsets, lengths, strict=True)}
                self._sample_rate = int(handle.attrs["sample_rate"])
        return self._file

    @property
    def sample_rate(self) -> int:
        self._handle()
        return self._sample_rate  # type: ignore[return-value]

    def keys(self) -> list[str]:
        """Clip keys in pack order."""
        self._handle()
        return list(self._index)  # type: ignore[arg-type]

    def length(self, key: str) -> int:
        """Samples of one clip."""
        self._handle()
        return self._entry(key)[1]

    def location(self, key: str) -> tuple[int, int]:
        """``(first sample in /waveforms, samples)`` of one clip."""
        self._handle()
        return self._entry(key)

    def read_run(self, start: int, count: int, out: np.ndarray) -> np.ndarray:
        """Samples ``[start, start + count)`` of the concatenated clips into ``out`` (int16,
        contiguous): clips that lie back to back are read with one call."""
        self._handle()
        self._read_samples(start, count, out)
        return out

    def _entry(self, key: str) -> tuple[int, int]:
        try:
            return self._index[key]  # type: ignore[index]
        except KeyError:
            raise InputFileError(f"clip {key!r} is not in this pack", self.path) from None

    def read(self, key: str) -> tuple[np.ndarray, int]:
        """``(float32 waveform in [-1, 1], sample_rate)`` of one clip."""
        samples = self.read_int16(key)
        return samples.astype(np.float32) / np.float32(INT16_SCALE), self._sample_rate  # type: ignore[return-value]

    def read_int16(self, key: str, num_samples: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The clip's stored int16 samples, as they are (no float copy).

        With ``num_samples``, the clip is cropped from the start / zero-padded at the end
        to that length while it is read; ``out`` (int16, ``num_samples`` long, contiguous)
        receives it (the float conversion happens later, on the model's device).
        """
        self._handle()
        offset, length = self._entry(key)
        if num_samples is None:
            num_samples = length
        if out is None:
            out = np.empty(num_samples, dtype=np.int16)
        count = min(length, num_samples)
        if count:
            self._read_samples(offset, count, out[:count])
        out[count:] = 0
        return out

    def _read_samples(self, start: int, count: int, out: np.ndarray) -> None:
        """Samples ``[start, start + count)`` of /waveforms into ``out`` (int16, contiguous)."""
        if self._runs is None:  # h5py's plain slice read (its fast path) + one copy
            out[:] = self._waveforms[start : start + count]
            return
        for position, file_offset, size in self._runs.segments(start, count):
            got = os.preadv(self._fd, [out[position : position + size]], file_offset)
            if got != 2 * size:
                raise InputFileError(f"pack is truncated (read {got} of {2 * size} bytes at {file_offset})", self.path)

    def _direct_reads_agree(self) -> bool:
        """Direct reads return what h5py returns (first samples, and across the first break)."""
        total = int(self._waveforms.shape[0])
        probes = {0, max(0, self._runs.first_break_sample - 8)}  # type: ignore[union-attr]
        for start in probes:
            count = min(4096, total - start)
            if count <= 0:
                continue
            direct = np.empty(count, dtype=np.int16)
            for position, file_offset, size in self._runs.segments(start, count):  # type: ignore[union-attr]
                if os.preadv(self._fd, [direct[position : position + size]], file_offset) != 2 * size:
                    return False
            if not np.array_equal(direct, self._waveforms[start : start + count]):
                return False
        return True

    def __contains__(self, key: object) -> bool:
        self._handle()
        return key in self._index  # type: ignore[operator]

    def __len__(self) -> int:
        self._handle()
        return len(self._index)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
            if self._fd is not None:
                os.close(self._fd)
        self._file, self._pid, self._waveforms, self._fd, self._runs = None, None, None, None, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"], state["_waveforms"], state["_fd"], state["_runs"] = None, None, None, None, None
        return state

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ChunkRuns:
    """Where /waveforms' chunks lie in the file: runs of chunks stored back to back.

    Built only for unfiltered little-endian int16 data stored in full chunks, every chunk
    allocated (else :meth:`of` returns None and reads go through h5py)."""

    def __init__(self, chunk: int, total_chunks: int, run_chunks: list[int], run_offsets: list[int]) -> None:
        self.chunk = chunk
        self.total_chunks = total_chunks
        self.run_chunks = run_chunks  # first chunk of each run
        self.run_offsets = run_offsets  # file byte offset of that chunk

    @property
    def first_break_sample(self) -> int:
        return self.run_chunks[1] * self.chunk if len(self.run_chunks) > 1 else 0

    @classmethod
    def of(cls, handle, dataset) -> _ChunkRuns | None:
        if sys.byteorder != "little" or dataset.dtype != np.dtype("<i2") or dataset.chunks is None:
            return None
        if dataset.id.get_create_plist().get_nfilters() or handle.id.get_create_plist().get_userblock():
            return None
        chunk = int(dataset.chunks[0])
        total_chunks = -(-int(dataset.shape[0]) // chunk)
        starts, offsets, sizes, masks = [], [], [], []

        def visit(info) -> None:
            starts.append(info.chunk_offset[0] // chunk)
            offsets.append(info.byte_offset)
            sizes.append(info.size)
            masks.append(info.filter_mask)

        dataset.id.chunk_iter(visit)
        if not total_chunks or len(starts) != total_chunks or any(masks) or set(sizes) != {2 * chunk}:
            return None
        order = np.argsort(starts)
        if not np.array_equal(np.asarray(starts)[order], np.arange(total_chunks)):
            return None
        offsets_sorted = np.asarray(offsets, dtype=np.int64)[order]
        breaks = np.flatnonzero(np.r_[True, np.diff(offsets_sorted) != 2 * chunk])
        return cls(chunk, total_chunks, breaks.tolist(), offsets_sorted[breaks].tolist())

    def segments(self, start: int, count: int) -> Iterator[tuple[int, int, int]]:
        """``(position in the output, file byte offset, samples)`` of each contiguous piece."""
        position = 0
        while position < count:
            sample = start + position
            run = bisect.bisect_right(self.run_chunks, sample // self.chunk) - 1
            run_end = self.run_chunks[run + 1] if run + 1 < len(self.run_chunks) else self.total_chunks
            size = min(run_end * self.chunk - sample, count - position)
            yield position, self.run_offsets[run] + 2 * (sample - self.run_chunks[run] * self.chunk), size
            position += size
