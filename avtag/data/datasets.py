"""Clip datasets, the class-balanced sampler and the Lightning data module for training.

:class:`ClipDataset` turns a manifest (:mod:`avtag.data.manifests`) into
``{"waveform", "target", "index"}`` items: the waveform is mono float32 at the
front-end's sample rate, padded/cropped to the clip length (waveforms, not features:
the front-end runs inside the LightningModule on the model's device, so a GPU computes
the log-mels); the target is multi-hot over the class list. With ``int16=True`` (the
training data module's default) and every clip from a pack stored at the requested rate,
waveforms are the pack's int16 samples and the
front-end converts them on the model's device (half the bytes through the loader, no
float copy on the CPU; our documented choice, measured in scripts/bench_data.py);
otherwise they are float32 in [-1, 1]. Audio comes from the file
named in ``audio`` or from the HDF5 pack named in ``pack``/``pack_key``
(:mod:`avtag.data.pack`). Every problem with the manifest (unknown labels, absent
files) is found when the dataset is built, not mid-epoch.

:class:`ClassBalancedSampler` draws class-balanced mini-batches (see its docstring for
the exact scheme); :class:`ClipDataModule` wires both into Lightning.

Choices where the paper is silent:
- Balanced mini-batches (004 §3.2 gives the batch size, 95, but not how batches are
  drawn): classes are visited round-robin in a random order that is re-drawn after
  every full round, and each visit draws the next clip of that class from a shuffled
  per-class list (reshuffled when used up). The round continues across batch
  boundaries, so with 17 classes and 95 clips every class gets 5 or 6 slots per batch.
  Clips with no label at all form one extra "background" group in the rotation.
- An epoch of the balanced sampler is ``ceil(clips / (batch_size * processes))``
  batches per process unless ``epoch_batches`` says otherwise.
- Under DDP every process draws its own balanced stream (seeded by seed, epoch and
  rank); ``batch_size`` is per process, as everywhere in Lightning.
- Validation under DDP: Lightning's distributed sampler pads the last shard with
  repeated clips; every item carries its dataset ``index`` so that the gathered
  predictions can be de-duplicated before thresholds and metrics are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from avtag.audio.features import LogMelFrontEnd, fit_length
from avtag.audio.io import load_audio, resample
from avtag.data.pack import PackReader
from avtag.data.manifests import ClipRecord, read_manifest, resolve
from avtag.data.samplers import ClassBalancedSampler, RatioBalancedSampler, resolve_sampler  # noqa: F401 (re-export)
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

    Every item has an ``"error"`` entry: ``""`` for a clip that decoded.
        int16: ship the pack's int16 samples when every clip is packed at ``sample_rate``
            (the front-end converts them on its device); :attr:`ships_int16` says
            whether that is the case. Otherwise waveforms are float32.
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
        self._want_int16 = bool(int16)
        self.ships_int16 = False
        self._check_sources()

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

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch of items (DataLoader calls this with a batch's indices).

        With int16 packed clips of a fixed length, every clip is read straight into its
        row of one ``(batch, samples)`` int16 tensor (in shared memory inside a loader
        worker), so :func:`collate_clips` hands that tensor on without the stacking copy.
        The result is still a list of per-clip items (views of the rows), so the default
        collation works too."""
        if not self.ships_int16 or self.clip_samples is None or self.on_error != "raise":
            return [self[int(i)] for i in indices]
        rows, samples = len(indices), self.clip_samples
        if get_worker_info() is not None:  # allocate where the batch will travel, as default_collate does
            probe = torch.empty(0, dtype=torch.int16)
            waveforms = probe.new(probe._typed_storage()._new_shared(rows * samples, device="cpu")).resize_(rows, samples)
        else:
            waveforms = torch.empty((rows, samples), dtype=torch.int16)
        for row, index in enumerate(indices):
            record = self.records[int(index)]
            reader = self._pack(resolve(self.base_dir, record.pack))  # type: ignore[arg-type]
            reader.read_int16(record.pack_key or record.id, samples, out=waveforms[row].numpy())
        targets = torch.from_numpy(self.targets[np.asarray(indices, dtype=np.int64)])
        return ClipBatch(
            [{"waveform": waveforms[row], "target": targets[row], "index": int(index), "error": ""} for row, index in enumerate(indices)],
            {"waveform": waveforms, "target": targets, "index": torch.as_tensor(np.asarray(indices, dtype=np.int64)), "error": [""] * rows},
        )

    def _read_pack_int16(self, record: ClipRecord) -> np.ndarray:
        reader = self._pack(resolve(self.base_dir, record.pack))  # type: ignore[arg-type]
        return reader.read_int16(record.pack_key or record.id, self.clip_samples)

    def _read_pack(self, record: ClipRecord) -> np.ndarray:
        reader = self._pack(resolve(self.base_dir, record.pack))  # type: ignore[arg-type]
        samples, rate = reader.read(record.pack_key or record.id)
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


class ClipBatch(list):
    """Per-clip items that are rows of one already-batched dict (``.batch``)."""

    def __init__(self, items: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        super().__init__(items)
        self.batch = batch


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader collation: a :class:`ClipBatch` is passed on as it is (no copy);
    anything else goes through torch's default collation."""
    if isinstance(items, ClipBatch):
        return items.batch
    return default_collate(items)


def check_module_input(datamodule: L.LightningDataModule, module: Any) -> None:
    """Refuse, before any step runs, a module that consumes another batch entry than
    ``datamodule.input_key`` (a feature model fed waveforms, or the reverse)."""
    wanted = getattr(module, "input_key", None)
    yields = getattr(datamodule, "input_key", None)
    if wanted is None or yields is None or wanted == yields:
        return
    kinds = {
        "waveform": "waveforms (data module avtag.data.datasets.ClipDataModule)",
        "features": "precomputed features (frontend: null; data module avtag.data.embeddings.EmbeddingDataModule)",
    }
    name = getattr(getattr(module, "model", None), "model_name", type(module).__name__)
    raise AvtagError(f"model {name!r} takes {kinds.get(wanted, wanted)}, but {type(datamodule).__name__} yields {yields!r}")


class SplitDataModule(L.LightningDataModule):
    """What the waveform and the embedding data modules share: one data source per
    split, datasets built once in ``setup``, the training-batch sampler and the loaders.

    ``sampler`` (``data.sampler``) picks how training batches are drawn: "shuffle"
    (plain shuffled epochs), "kong" (:class:`ClassBalancedSampler`) or "xu"
    (:class:`avtag.data.samplers.RatioBalancedSampler`); both balanced samplers draw one
    stream per DDP process. Without it, ``balanced: true`` means "kong" and
    ``balanced: false`` "shuffle", as in older configs.

    Subclasses set ``input_key`` (the batch entry the module consumes), implement
    :meth:`_source` and :meth:`_build`, and may resolve defaults from the module being
    trained in :meth:`_resolve_from_module`.
    """

    input_key: str = ""

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        balanced: bool,
        epoch_batches: int | None,
        seed: int,
        classes: list[str] | None,
        pin_memory: bool | None,
        sampler: str | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.balanced = balanced
        # data.sampler: shuffle | kong | xu; without it, balanced true = kong (older configs).
        self.sampler = resolve_sampler(sampler, balanced)
        self.epoch_batches = epoch_batches
        self.seed = seed
        self.classes = classes
        self.pin_memory = pin_memory
        self.datasets: dict[str, Dataset] = {}

    def _source(self, split: str) -> str:
        """The configured source of ``split``; a one-line error when it is missing."""
        raise NotImplementedError

    def _build(self, split: str, source: str) -> Dataset:
        raise NotImplementedError

    def _resolve_from_module(self, module: Any) -> None:
        if self.classes is None and module is not None and hasattr(module, "classes"):
            self.classes = list(module.classes)

    def _dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            self.datasets[split] = self._build(split, self._source(split))
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        check_module_input(self, module)
        self._resolve_from_module(module)
        splits = {"fit": ("train", "val"), None: ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in splits.get(stage, ()):
            self._dataset(split)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_clips,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if self.sampler == "shuffle":
            return self._loader(dataset, shuffle=True, drop_last=False)
        trainer = self.trainer
        sampler_class = RatioBalancedSampler if self.sampler == "xu" else ClassBalancedSampler
        sampler = sampler_class(
            dataset.targets,
            self.batch_size,
            self.epoch_batches,
            self.seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )
        return self._loader(dataset, sampler=sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], shuffle=False)


class ClipDataModule(SplitDataModule):
    """Train/validation/test manifests -> DataLoaders of waveform batches.

    ``classes``, ``sample_rate`` and ``clip_seconds`` default to those of the
    LightningModule being trained (its class list and front-end), so a training config
    names them once, on the model. ``int16_batches``: packed clips travel as int16 and
    the front-end converts them on the model's device (see :class:`ClipDataset`).
    """

    input_key = "waveform"  # the batch entry a TaggingModule consumes

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        batch_size: int = 95,
        num_workers: int = 4,
        balanced: bool = True,
        epoch_batches: int | None = None,
        seed: int = 0,
        classes: list[str] | None = None,
        sample_rate: int | None = None,
        clip_seconds: float | None = None,
        pin_memory: bool | None = None,
        sampler: str | None = None,
        int16_batches: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, balanced, epoch_batches, seed, classes, pin_memory, sampler)
        self.int16_batches = int16_batches
        # "classes" is recorded by the LightningModule (Lightning refuses differing duplicates).
        self.save_hyperparameters(ignore=["classes"])
        self.manifests = {"train": train_manifest, "val": val_manifest, "test": test_manifest}
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds

    def _resolve_from_module(self, module: Any) -> None:
        if self.classes is None:
            self.classes = list(module.classes) if module is not None and hasattr(module, "classes") else event_names()
        frontend = getattr(module, "frontend", None)
        if self.sample_rate is None:
            if frontend is None:
                raise ValueError("ClipDataModule needs sample_rate when the module has no front-end")
            self.sample_rate = frontend.sample_rate
        if self.clip_seconds is None and frontend is not None:
            self.clip_seconds = frontend.clip_seconds

    def _source(self, split: str) -> str:
        manifest = self.manifests[split]
        if manifest is None:
            raise ManifestError(f"no {split} manifest given (data.{split}_manifest)")
        return manifest

    def _build(self, split: str, source: str) -> ClipDataset:
        return ClipDataset(source, self.sample_rate, self.clip_seconds, self.classes, int16=self.int16_batches)


__all__ = ["ClassBalancedSampler", "ClipBatch", "ClipDataModule", "ClipDataset", "SplitDataModule", "check_module_input", "collate_clips"]
