"""Clip datasets: a manifest's clips as waveforms and multi-hot targets.

:class:`ClipDataset` turns a manifest (:mod:`avtag.data.manifests`) into
``{"waveform", "target", "index", "error"}`` items: the waveform is mono at the
front-end's sample rate, padded/cropped to the clip length (waveforms, not features:
the front-end runs inside the LightningModule on the model's device, so a GPU computes
the log-mels); the target is multi-hot over the class list. With ``int16=True`` (the
training data module's default) and every clip from a pack stored at the requested rate,
waveforms are the pack's int16 samples and the front-end converts them on the model's
device (half the bytes through the loader, no float copy on the CPU; our documented
choice, measured in scripts/bench_data.py); otherwise they are float32 in [-1, 1]. Audio
comes from the file named in ``audio`` or from the HDF5 pack named in ``pack``/``pack_key``
(:mod:`avtag.data.pack`). Every problem with the manifest (unknown labels, absent files)
is found when the dataset is built, not mid-epoch.

Batches of int16 packed clips are read whole (:meth:`ClipDataset.__getitems__`) into
reused shared buffers (:mod:`avtag.data.batch_slots`); :func:`collate_clips` passes them on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from avtag.audio.features import LogMelFrontEnd, fit_length
from avtag.audio.io import load_audio, resample
from avtag.data.batch_slots import BatchSlots, SlotBatch
from avtag.data.manifests import ClipRecord, read_manifest, resolve
from avtag.data.pack import PackReader
from avtag.errors import AvtagError, ManifestError
from avtag.events import event_names

MAX_LISTED_MISSING = 3


class ClipDataset(Dataset):
    """Waveforms and multi-hot targets of the clips of a manifest.

    Args:
        manifest: a JSONL manifest path, or records (then ``base_dir`` resolves
            relative paths; default: the current directory).
        sample_rate: rate of the returned waveforms (taken from ``frontend`` if given).
        clip_seconds: clip length; waveforms are cropped from the start / zero-padded
            at the end to it. ``None`` keeps each clip's own length (batch size 1).
        classes: class names, the order of the target vector (default: the 17 DCASE
            2017 events).
        frontend: a :class:`LogMelFrontEnd` or its ``config`` dict; supplies
            ``sample_rate`` and ``clip_seconds``.
        on_error: ``"raise"`` (training: a clip that cannot be decoded stops with its
            one-line error; packed data was decoded when it was packed) or ``"report"``
            (evaluation: the item carries silence and its ``"error"`` message, so one bad
            file costs one clip, not the run).
        int16: ship the pack's int16 samples when every clip is packed at ``sample_rate``
            (the front-end converts them on its device); :attr:`ships_int16` says
            whether that is the case. Otherwise waveforms are float32.

    Every item has an ``"error"`` entry: ``""`` for a clip that decoded.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[ClipRecord],
        sample_rate: int | None = None,
        clip_seconds: float | None = 10.0,
        classes: Sequence[str] | None = None,
        *,
        frontend: LogMelFrontEnd | dict[str, Any] | None = None,
        base_dir: str | Path | None = None,
        on_error: str = "raise",
        int16: bool = False,
    ) -> None:
        if on_error not in ("raise", "report"):
            raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        self.on_error = on_error
        if frontend is not None:
            config = frontend.config if isinstance(frontend, LogMelFrontEnd) else dict(frontend)
            sample_rate = int(config["sample_rate"])
            clip_seconds = config.get("clip_seconds")
        if sample_rate is None:
            raise ValueError("ClipDataset needs a sample_rate (or a frontend)")
        if isinstance(manifest, (str, Path)):
            self.manifest_path: Path | None = Path(manifest)
            self.records = read_manifest(manifest)
            self.base_dir = self.manifest_path.parent
        else:
            self.manifest_path = None
            self.records = list(manifest)
            self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
            if not self.records:
                raise ManifestError("manifest has no clips")
        self.sample_rate = int(sample_rate)
        self.clip_seconds = None if clip_seconds is None else float(clip_seconds)
        self.classes = list(classes) if classes is not None else event_names()
        self.targets = self._multi_hot()
        self._packs: dict[Path, PackReader] = {}
        self._readers: dict[str, PackReader] = {}
        self._slots = BatchSlots()
        self._want_int16 = bool(int16)
        self.ships_int16 = False
        self._check_sources()

    def __del__(self) -> None:
        slots = getattr(self, "_slots", None)
        if slots is not None:
            slots.close()

    @property
    def clip_samples(self) -> int | None:
        return None if self.clip_seconds is None else int(round(self.clip_seconds * self.sample_rate))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        error = ""
        try:
            if self.ships_int16:
                waveform = torch.from_numpy(self._read_pack_int16(self.records[index]))
            else:
                waveform = torch.from_numpy(self.load_waveform(index))
        except AvtagError as err:
            if self.on_error == "raise":
                raise
            dtype = torch.int16 if self.ships_int16 else torch.float32
            waveform, error = torch.zeros(self.clip_samples or 1, dtype=dtype), str(err)
        if self.clip_samples is not None and waveform.shape[-1] != self.clip_samples:
            waveform = fit_length(waveform, self.clip_samples)
        return {"waveform": waveform, "target": torch.from_numpy(self.targets[index]), "index": index, "error": error}

    # ------------------------------------------------------------------ loading

    def load_waveform(self, index: int) -> np.ndarray:
        """The clip's mono float32 samples at :attr:`sample_rate` (its own length)."""
        record = self.records[index]
        if record.pack is not None:
            return self._read_pack(record)
        return load_audio(self._audio_path(record), target_sr=self.sample_rate, mono=True)[0]

    def _audio_path(self, record: ClipRecord) -> Path:
        return resolve(self.base_dir, record.audio)  # type: ignore[return-value]

    def _pack(self, path: Path) -> PackReader:
        if path not in self._packs:
            self._packs[path] = PackReader(path)  # opens its HDF5 file lazily, once per process
        return self._packs[path]

    def _reader(self, record: ClipRecord) -> PackReader:
        """The reader of a record's pack, looked up by the name in the manifest (no path
        resolution per clip)."""
        reader = self._readers.get(record.pack)  # type: ignore[arg-type]
        if reader is None:
            reader = self._readers[record.pack] = self._pack(resolve(self.base_dir, record.pack))  # type: ignore[index,arg-type]
        return reader

    def __getitems__(self, indices: Sequence[int]) -> ClipBatch | list[dict[str, Any]]:
        """A batch of items (DataLoader calls this with a batch's indices).

        With int16 packed clips of a fixed length, the clips are read straight into the rows
        of one ``(batch, samples)`` int16 buffer: a reused slot (:mod:`avtag.data.batch_slots`)
        when one is free, else a fresh buffer (in shared memory inside a loader worker), so
        :func:`collate_clips` hands it on without a stacking copy. Clips that lie back to back
        in the pack, in batch order (unshuffled loaders), are read with one call per run."""
        if not self.ships_int16 or self.clip_samples is None or self.on_error != "raise":
            return [self[int(i)] for i in indices]
        rows, samples = len(indices), self.clip_samples
        in_worker = get_worker_info() is not None
        taken = self._slots.take(rows, samples, in_worker)
        if taken is not None:
            slot, waveforms = taken
        elif in_worker:  # allocate where the batch will travel, as default_collate does
            slot, waveforms = None, torch.empty((rows, samples), dtype=torch.int16).share_memory_()
        else:
            slot, waveforms = None, torch.empty((rows, samples), dtype=torch.int16)
        self._read_rows(indices, waveforms.numpy())
        fields = {"target": self.targets[np.asarray(indices, dtype=np.int64)],
                  "index": np.asarray(indices, dtype=np.int64), "error": [""] * rows}
        if slot is not None:
            return ClipBatch(self._slots.finish(slot, rows, fields, in_worker))
        return ClipBatch({"waveform": waveforms, "target": torch.from_numpy(fields["target"]),
                          "index": torch.from_numpy(fields["index"]), "error": fields["error"]})

    def _read_rows(self, indices: Sequence[int], out: np.ndarray) -> None:
        """The clips' int16 samples into the rows of ``out``, one read per run of clips that
        are whole, of the row length and back to back in the same pack."""
        samples = out.shape[1]
        row = 0
        while row < len(indices):
            record = self.records[int(indices[row])]
            reader = self._reader(record)
            start, length = reader.location(record.pack_key or record.id)
            run = 1
            while length == samples and row + run < len(indices):
                following = self.records[int(indices[row + run])]
                if following.pack != record.pack or reader.location(following.pack_key or following.id) != (start + run * samples, samples):
                    break
                run += 1
            if run == 1:
                reader.read_int16(record.pack_key or record.id, samples, out=out[row])
            else:
                reader.read_run(start, run * samples, out[row : row + run].reshape(-1))
            row += run

    def _read_pack_int16(self, record: ClipRecord) -> np.ndarray:
        return self._reader(record).read_int16(record.pack_key or record.id, self.clip_samples)

    def _read_pack(self, record: ClipRecord) -> np.ndarray:
        samples, rate = self._reader(record).read(record.pack_key or record.id)
        return resample(samples, int(rate), self.sample_rate)

    # ------------------------------------------------------------------ up-front checks

    def _multi_hot(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        targets = np.zeros((len(self.records), len(self.classes)), dtype=np.float32)
        unknown: dict[str, int] = {}
        for row, record in enumerate(self.records):
            for label in record.labels:
                if label in index:
                    targets[row, index[label]] = 1.0
                else:
                    unknown[label] = unknown.get(label, 0) + 1
        if unknown:
            listed = ", ".join(f"{name!r} ({count} clips)" for name, count in list(unknown.items())[:MAX_LISTED_MISSING])
            more = f" and {len(unknown) - MAX_LISTED_MISSING} more" if len(unknown) > MAX_LISTED_MISSING else ""
            raise ManifestError(
                f"{len(unknown)} label(s) not in the class list of {len(self.classes)} classes: {listed}{more}",
                self.manifest_path,
            )
        return targets

    def _check_sources(self) -> None:
        """Every record names a readable source: report all absent files in one line."""
        missing: list[str] = []
        no_source: list[str] = []
        pack_keys: dict[Path, list[str]] = {}
        for record in self.records:
            if record.pack is not None:
                pack_keys.setdefault(resolve(self.base_dir, record.pack), []).append(record.pack_key or record.id)
            elif record.audio is not None:
                path = self._audio_path(record)
                if not path.is_file():
                    missing.append(str(path))
            else:
                no_source.append(record.id)
        if no_source:
            raise ManifestError(
                f"{len(no_source)} record(s) name neither an audio file nor a pack (first: {', '.join(no_source[:MAX_LISTED_MISSING])})",
                self.manifest_path,
            )
        missing_keys: list[str] = []
        for pack_path, keys in pack_keys.items():
            if not pack_path.is_file():
                missing.append(str(pack_path))
                continue
            reader = self._pack(pack_path)
            missing_keys += [f"{pack_path.name}:{key}" for key in keys if key not in reader]
        self.ships_int16 = (
            self._want_int16
            and bool(pack_keys)
            and not missing
            and all(record.pack is not None for record in self.records)
            and all(self._pack(path).sample_rate == self.sample_rate for path in pack_keys)
        )
        if missing:
            raise ManifestError(
                f"{len(missing)} of {len(self.records)} files named by the manifest are missing "
                f"(first: {', '.join(missing[:MAX_LISTED_MISSING])})",
                self.manifest_path,
            )
        if missing_keys:
            raise ManifestError(
                f"{len(missing_keys)} clip(s) are not in their pack (first: {', '.join(missing_keys[:MAX_LISTED_MISSING])})",
                self.manifest_path,
            )


class ClipBatch(Sequence):
    """A batch that is already collated (``.batch``: a dict, or a :class:`SlotBatch` on
    its way out of a worker); :func:`collate_clips` passes it on as it is. Indexing it gives
    per-clip items as copies (for other collate functions), never views of a reused slot."""

    def __init__(self, batch: dict[str, Any] | SlotBatch) -> None:
        self.batch = batch

    def _entries(self) -> tuple[torch.Tensor, dict[str, Any]]:
        if isinstance(self.batch, SlotBatch):
            return self.batch.waveform, self.batch.fields
        return self.batch["waveform"], self.batch

    def __len__(self) -> int:
        return len(self._entries()[0])

    def __getitem__(self, row: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        waveform, fields = self._entries()
        return {"waveform": waveform[row].clone(), "target": torch.as_tensor(fields["target"][row]).clone(),
                "index": int(fields["index"][row]), "error": fields["error"][row]}


def collate_clips(items: ClipBatch | list[dict[str, Any]]) -> Any:
    """DataLoader collation: a :class:`ClipBatch` is passed on as it is (no copy);
    anything else goes through torch's default collation."""
    if isinstance(items, ClipBatch):
        return items.batch
    return default_collate(items)


__all__ = ["ClipBatch", "ClipDataset", "collate_clips"]
