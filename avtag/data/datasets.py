"""The Lightning data modules for training: one data source per split -> DataLoaders.

:class:`SplitDataModule` holds what every data module shares (the loader settings, the
training-batch sampler, the loaders themselves); :class:`ClipDataModule` serves waveform
batches from manifests through :class:`avtag.data.clips.ClipDataset` (re-exported here,
with :class:`ClipBatch`, :func:`collate_clips` and the samplers, so every import path and
config ``class_path`` keeps working).

Choices where the paper is silent:
- Balanced mini-batches (004 §3.2 gives the batch size, 95, but not how batches are
  drawn): see :mod:`avtag.data.samplers` ("kong" and "xu").
- An epoch of a balanced sampler is ``ceil(clips / (batch_size * processes))``
  batches per process unless ``epoch_batches`` says otherwise.
- Under DDP every process draws its own balanced stream (seeded by seed, epoch and
  rank); ``batch_size`` is per process, as everywhere in Lightning.
- Validation under DDP: Lightning's distributed sampler pads the last shard with
  repeated clips; every item carries its dataset ``index`` so that the gathered
  predictions can be de-duplicated before thresholds and metrics are computed.
- Loaders (our documented choice): ``pin_memory`` only when the trainer runs on CUDA
  (page-locked copies help only host-to-GPU transfers), persistent workers (no worker
  start, and no slot set-up, per epoch).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from avtag.data.clips import ClipBatch, ClipDataset, collate_clips  # noqa: F401 (re-export)
from avtag.data.samplers import ClassBalancedSampler, RatioBalancedSampler, resolve_sampler  # noqa: F401 (re-export)
from avtag.errors import AvtagError, ManifestError
from avtag.events import event_names


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
        num_workers: int = 4,
        balanced: bool = True,
        epoch_batches: int | None = None,
        seed: int = 0,
        classes: list[str] | None = None,
        pin_memory: bool | None = None,
        sampler: str | None = None,
    ) -> None:
        """Loader settings shared by every data module (subclasses take them as ``**loader``).

        Args:
            batch_size: clips per batch and process (each subclass sets its default).
            num_workers: loader worker processes.
            balanced: older configs' switch: true = sampler "kong", false = "shuffle".
            epoch_batches: batches per epoch of a balanced sampler (default: one pass).
            seed: the balanced samplers' seed.
            classes: class names (default: the LightningModule's).
            pin_memory: page-locked batches; default: only when training on CUDA.
            sampler: "shuffle", "kong" or "xu" (:mod:`avtag.data.samplers`).
        """
        super().__init__()
        # Every subclass's arguments too (Lightning walks the __init__ frames); "classes" is
        # recorded by the LightningModule (Lightning refuses differing duplicates).
        self.save_hyperparameters(ignore=["classes"])
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

    # Subclasses: what a split's source is called, its config field (data.<split>_<field>),
    # and the error for a missing one; ``self.sources`` maps split -> configured source.
    source_label, source_field, source_error = "manifest", "manifest", ManifestError

    def _source(self, split: str) -> str:
        """The configured source of ``split``; a one-line error when it is missing."""
        source = self.sources[split]
        if source is None:
            raise self.source_error(f"no {split} {self.source_label} given (data.{split}_{self.source_field})")
        return source

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

    def pin(self) -> bool:
        """Page-locked batches: as configured, else only when the trainer runs on CUDA."""
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def loader_options(self) -> dict[str, Any]:
        """The DataLoader settings every loader of every data module uses (one place)."""
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin(),
            "persistent_workers": self.num_workers > 0,
        }

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, collate_fn=collate_clips, **self.loader_options(), **kwargs)

    def balanced_sampler(self, targets: Any) -> ClassBalancedSampler | RatioBalancedSampler:
        """The configured balanced sampler ("kong" or "xu") over ``targets``, one stream per rank."""
        trainer = self.trainer
        sampler_class = RatioBalancedSampler if self.sampler == "xu" else ClassBalancedSampler
        return sampler_class(
            targets,
            self.batch_size,
            self.epoch_batches,
            self.seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if self.sampler == "shuffle":
            return self._loader(dataset, shuffle=True, drop_last=False)
        return self._loader(dataset, sampler=self.balanced_sampler(dataset.targets), drop_last=False)

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
        batch_size: int = 95,  # 004 §3.2
        sample_rate: int | None = None,
        clip_seconds: float | None = None,
        int16_batches: bool = True,
        **loader: Any,
    ) -> None:
        """``**loader``: the shared loader settings of :class:`SplitDataModule`."""
        super().__init__(batch_size, **loader)
        self.int16_batches = int16_batches
        self.sources = {"train": train_manifest, "val": val_manifest, "test": test_manifest}
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

    def _build(self, split: str, source: str) -> ClipDataset:
        return ClipDataset(source, self.sample_rate, self.clip_seconds, self.classes, int16=self.int16_batches)


__all__ = ["ClassBalancedSampler", "ClipBatch", "ClipDataModule", "ClipDataset", "SplitDataModule", "check_module_input", "collate_clips"]
