"""Batch buffers in shared memory that loader workers reuse once the main process lets go.

Why (measured in scripts/bench_data.py on the 2-core development box): a fresh 12.8 MB
shared-memory batch per step cost ~20 ms to create and fill there, 6x the read itself, so
workers delivered 0.1x of raw reads. Here each process that fills batches (a loader worker,
or the main process with ``num_workers=0``) owns a few *slots*: shared int16 buffers of one
batch, created once. A worker sends a slot's buffer to the main process with the first
batch that uses it and afterwards only ``(slot, rows)`` plus the small targets, so no
shared memory is created and no file descriptor travels per batch.

Safety (our documented choice): a slot is refilled only when the main process has seen that
no tensor uses its memory any more (the storage's reference count is back to the slot's
own), checked whenever a batch arrives; a batch that is dropped unread (a loader reset) also
counts as let go. When no slot is free (a consumer keeps many batches), the batch goes into
a fresh buffer as before: slower, never shared by two batches.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import torch

SLOTS = 6  # per filling process: prefetch_factor (2) batches in flight + the consumer's + slack
_FREE, _TAKEN = 1, 0


def _shared_int16(rows: int, samples: int) -> torch.Tensor:
    return torch.empty((rows, samples), dtype=torch.int16).share_memory_()


# torch's count of references to a storage (private, in torch since 1.x; torch is pinned
# exactly in pyproject.toml). Without it no slot is reused: every batch gets a fresh buffer.
_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _use_count(tensor: torch.Tensor) -> int:
    return _STORAGE_USE_COUNT(tensor.untyped_storage()._cdata)  # type: ignore[misc]


# A buffer that nothing else uses: its own tensor + the storage handle this count makes.
_IDLE = _use_count(torch.empty(1)) if _STORAGE_USE_COUNT is not None else 0


class _Lent:
    """Main-process record of one slot's buffer: its free flag and its idle reference count."""

    def __init__(self, buffer: torch.Tensor, flags: torch.Tensor, slot: int, pid: int) -> None:
        self.buffer, self.flags, self.slot, self.pid = buffer, flags, slot, pid
        self.out = False

    def lend(self, rows: int) -> torch.Tensor:
        self.out = True
        return self.buffer[:rows]

    def release_if_idle(self) -> None:
        if self.out and _use_count(self.buffer) <= _IDLE:
            self.out = False
            self.flags[self.slot] = _FREE


# Main process: ring key -> (pid, slot) -> record. Worker processes never read it.
_RECEIVED: dict[str, dict[tuple[int, int], _Lent]] = {}


def _release_idle(key: str) -> None:
    records = _RECEIVED.get(key, {})
    for name, record in list(records.items()):
        record.release_if_idle()
        if not record.out and record.pid != os.getpid() and not _alive(record.pid):
            del records[name]  # a finished worker's buffer: unmap it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _receive(key: str, pid: int, slot: int, buffer: torch.Tensor | None, flags: torch.Tensor | None,
             rows: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Unpickling in the main process: the batch as views of its slot's buffer."""
    records = _RECEIVED.setdefault(key, {})
    if buffer is not None:
        records[(pid, slot)] = _Lent(buffer, flags, slot, pid)  # type: ignore[arg-type]
    _release_idle(key)
    record = records[(pid, slot)]
    return {"waveform": record.lend(rows), **_tensors(fields)}


def _tensors(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: torch.from_numpy(value) if isinstance(value, np.ndarray) else value for name, value in fields.items()}


class SlotBatch:
    """A batch filled in a worker's slot, on its way to the main process (see the module doc).

    ``fields`` are the other batch entries as numpy arrays or lists (pickled by value: small)."""

    def __init__(self, owner: BatchSlots, slot: int, rows: int, fields: dict[str, Any]) -> None:
        self.owner, self.slot, self.rows, self.fields = owner, slot, rows, fields
        self.sent = False

    @property
    def waveform(self) -> torch.Tensor:
        return self.owner.buffers[self.slot][: self.rows]

    def __reduce__(self):
        self.sent = True
        owner = self.owner
        first_use, owner.sent[self.slot] = not owner.sent[self.slot], True  # the buffer travels once
        buffer, flags = (owner.buffers[self.slot], owner.flags) if first_use else (None, None)
        return _receive, (owner.key, os.getpid(), self.slot, buffer, flags, self.rows, self.fields)

    def __del__(self) -> None:
        if not self.sent:  # consumed in the worker (another collate copied it): free at once
            self.owner.flags[self.slot] = _FREE


class BatchSlots:
    """The slots of one dataset: each filling process creates its own on first use.

    :meth:`take` hands out a free slot's rows to fill (``None`` when none is free or the
    shape does not fit: the caller then fills a fresh buffer); :meth:`finish` turns the
    filled slot into a :class:`SlotBatch` in a loader worker, or into the batch dict (views
    of the slot) in the main process."""

    def __init__(self) -> None:
        self.key = uuid.uuid4().hex
        self._pid: int | None = None

    def _own(self, rows: int, samples: int) -> None:
        if self._pid != os.getpid():  # first use in this process (a fresh worker or the main)
            self._pid, self.rows, self.samples = os.getpid(), rows, samples
            self.buffers: list[torch.Tensor | None] = [None] * SLOTS
            self.sent = [False] * SLOTS
            self.flags = torch.full((SLOTS,), _FREE, dtype=torch.uint8).share_memory_()

    def take(self, rows: int, samples: int, in_worker: bool) -> tuple[int, torch.Tensor] | None:
        """A free slot and its first ``rows`` rows, marked taken; None if none fits."""
        self._own(rows, samples)
        if _STORAGE_USE_COUNT is None or rows > self.rows or samples != self.samples:
            return None
        if not in_worker:
            _release_idle(self.key)
        free = torch.nonzero(self.flags == _FREE)
        if not len(free):
            return None
        slot = int(free[0])
        self.flags[slot] = _TAKEN
        if self.buffers[slot] is None:
            self.buffers[slot] = _shared_int16(self.rows, samples) if in_worker else torch.empty((self.rows, samples), dtype=torch.int16)
        return slot, self.buffers[slot][:rows]  # type: ignore[index]

    def finish(self, slot: int, rows: int, fields: dict[str, Any], in_worker: bool) -> SlotBatch | dict[str, Any]:
        """The filled slot as what travels (a worker) or as the batch itself (the main)."""
        if in_worker:
            return SlotBatch(self, slot, rows, fields)
        records = _RECEIVED.setdefault(self.key, {})
        record = records.get((os.getpid(), slot))
        if record is None:
            record = records[(os.getpid(), slot)] = _Lent(self.buffers[slot], self.flags, slot, os.getpid())  # type: ignore[arg-type]
        return {"waveform": record.lend(rows), **_tensors(fields)}

    def __getstate__(self) -> dict[str, Any]:
        return {"key": self.key, "_pid": None}  # a worker makes its own slots

    def close(self) -> None:
        """Forget this dataset's buffers in this process (main side)."""
        _RECEIVED.pop(self.key, None)


__all__ = ["SLOTS", "BatchSlots", "SlotBatch"]
