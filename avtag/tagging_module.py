"""The LightningModule that ``avtag train`` trains (``python -m avtag.train fit --config ...``).

:class:`TaggingModule` holds a registered model (``model_name`` + ``model_args``), a
log-mel front-end (preset + overrides) and the class list. Batches are waveforms; the
front-end runs on the module's device, then the model, then ``model.loss`` (each model
family brings its own loss). ``decision_thresholds`` says how clip decisions are made:

* ``"tuned"`` (default): after every validation epoch the class-specific thresholds are
  tuned on the validation predictions with the iterative procedure of 004 §3.3
  (:func:`avtag.thresholds.tune_thresholds`), and the validation micro-F1 with those
  thresholds (``val_micro_f1``) selects the model (004 §3.3: "picked the model reaching
  the highest F1 on the validation data");
* a number: one global threshold for every class (000 scores DCASE 2017 with 0.3);
* ``"none"``: no threshold tuning, decisions at 0.5 (AudioSet is scored by ranking
  metrics; select with ``checkpoint.monitor: val_map``).

Every validation epoch logs ``val_micro_f1`` (at the mode's thresholds), precision,
recall, ``val_map``, ``val_mauc`` and ``val_dprime``, so a config can select on any of them.
``avtag train test --config C --ckpt_path CKPT`` scores ``data.test_manifest`` with the
checkpoint's thresholds and writes :mod:`avtag.evaluate`'s files (with the label-prior and
all-positive baselines) to ``<run folder>/test/``; ``avtag evaluate`` does the same from an
export. At the end of ``fit`` the real paths of the best and last checkpoints and what
stopped the run are printed (:mod:`avtag.train_report`).

Every checkpoint carries an ``"avtag"`` entry (:mod:`avtag.checkpoint_entry`: model name/args, unprefixed weights,
front-end config and state, classes, the thresholds tuned on validation at that epoch,
metadata) that :meth:`avtag.audio.tagger.AudioTagger.from_pretrained` reads with
``torch.load(weights_only=True)``; the rest of the checkpoint is kept to plain types
too, so Lightning can resume from it (``--ckpt_path``) with ``weights_only`` loading.

The optimiser defaults are the recipe of 004 §3.2: SGD, learning rate 0.1, Nesterov
momentum 0.8, batches of 95, learning rate x0.8 when the validation loss has not
decreased for 3 consecutive epochs. Gradient clipping is NOT a default: 004's 1e-3 limit
is written into the configs whose paper states it (``configs/crnn_maxpool.yaml``), so no
other config inherits it. The optimizer and scheduler are injected
callables, so a YAML file can swap in Adam for the other model families::

    model:
      optimizer:
        class_path: torch.optim.Adam
        init_args: {lr: 0.001}

Mixed precision ("16-mixed") is the default when CUDA is available; DDP via
``trainer.strategy: ddp`` (or ``torchrun``); resume with ``--ckpt_path``: a local file
only, read weights-only, the model configuration rebuilt from the checkpoint's ``"avtag"``
entry and nothing instantiated from checkpoint data (:mod:`avtag.resume`).

Choices where the paper is silent:
- Gradient clipping "limit of 1e-3" (004 §3.2, a Keras model), where a config states it:
  Keras offers ``clipnorm`` and ``clipvalue``; we clip by VALUE (element-wise,
  ``gradient_clip_algorithm: value``). With SGD at lr 0.1, a global-norm limit of 1e-3
  would cap every step at 1e-4 in parameter space, too small to converge in the stated
  6 hours; element-wise clipping caps each weight's step at 1e-4, a sign-SGD-like regime
  that trains.
- "Decayed by 0.8 when the validation loss did not reduce for 3 consecutive epochs":
  PyTorch's ReduceLROnPlateau reduces after ``patience + 1`` bad epochs, so the paper's
  3 epochs is ``patience=2``; "did not reduce" is read literally (``threshold=0``).
- Classes without a validation positive get threshold 0.5 with a warning
  (:data:`avtag.thresholds.ABSENT_CLASS_THRESHOLD`, our documented choice).
- Validation loss is the model's own training loss on the validation set; validation
  predictions are gathered across DDP processes (and de-duplicated) before the
  thresholds and metrics are computed, so every process selects identically.
- ``num_classes`` and ``n_mels`` are filled into ``model_args`` from the class list and
  the front-end when the model takes them and the config does not give them.
- Optional per-mel-bin standardisation (002 §2.7) from ``feature_statistics_clips``
  evenly spaced training clips, computed once before training.
- ``frontend: null`` means the inputs already are features (e.g. the AudioSet
  embeddings of 000 §3.4 for ``multilevel_embeddings``): batches carry ``features``
  (:class:`avtag.data.embeddings.EmbeddingDataModule`) that go straight to the model,
  and the checkpoint records ``frontend: None``. Such a model cannot become an
  :class:`AudioTagger`; ``python -m avtag.evaluate --embeddings`` evaluates it.
  Its frame hop is ``feature_hop_seconds`` (0.96 s, the AudioSet embedding segment).
- ``classes`` may be a path to a ``class_labels_indices.csv``: its display names
  (e.g. the 527 AudioSet classes) in index order.
- The data module is chosen in the config (``data.class_path``); without one it is
  :class:`avtag.data.datasets.ClipDataModule`, so older configs keep working.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

import avtag
from avtag.audio.features import LogMelFrontEnd, fit_statistics
from avtag.audio.models.base import TaggingOutput, build_model, get, segment_hop_seconds
from avtag.audio.tagger import AudioTagger
from avtag.data.embeddings import AUDIOSET_SEGMENT_SECONDS, class_names
from avtag.checkpoint_entry import avtag_entry, make_hyper_parameters_plain, plain
from avtag.decisions import epoch_scores, fixed_thresholds, parse_decision_thresholds, threshold_source
from avtag.errors import AvtagError
from avtag.events import event_names

SELECTION_METRIC = "val_micro_f1"


def paper_sgd(params: Iterable[Any]) -> Optimizer:
    """004 §3.2: SGD, learning rate 0.1, Nesterov momentum 0.8."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.8, nesterov=True)


def paper_plateau(optimizer: Optimizer) -> ReduceLROnPlateau:
    """004 §3.2: x0.8 after 3 consecutive epochs without a lower validation loss."""
    return ReduceLROnPlateau(optimizer, mode="min", factor=0.8, patience=2, threshold=0.0)


class TaggingModule(L.LightningModule):
    """Front-end + registered tagging model, trained on waveform batches (or, with
    ``frontend=None``, a model trained on batches of precomputed features).

    Args:
        model_name: a registered model (``avtag models`` lists them).
        model_args: its constructor arguments (JSON values).
        frontend: front-end preset ("crnn", "mmnet", "cnn"), or None: the batches
            carry ``features`` for the model (no front-end).
        frontend_args: overrides of the preset.
        classes: class names, or the path of a ``class_labels_indices.csv`` (all its
            display names); default: the 17 DCASE 2017 events.
        optimizer: callable ``params -> Optimizer`` (default: 004's SGD).
        scheduler: callable ``optimizer -> scheduler`` or None (default: 004's plateau decay).
        scheduler_monitor: metric a ReduceLROnPlateau scheduler watches.
        threshold_seed: seed of the random class order of the threshold tuning (004 §3.3).
        feature_statistics_clips: if > 0, standardise features with statistics from
            this many training clips (002 §2.7).
        metadata: free-form facts stored with the exported tagger.
        feature_hop_seconds: seconds between input feature frames when ``frontend`` is
            None (default 0.96, one AudioSet embedding segment); sets ``frame_hop``.
        decision_thresholds: "tuned" (004 §3.3, default), a global threshold in (0, 1)
            for every class (000: 0.3 on DCASE 2017), or "none" (no tuning; AudioSet).
    """

    def __init__(
        self,
        model_name: str = "crnn",
        model_args: dict[str, Any] | None = None,
        frontend: str | None = "crnn",
        frontend_args: dict[str, Any] | None = None,
        classes: list[str] | str | None = None,
        optimizer: OptimizerCallable = paper_sgd,
        scheduler: LRSchedulerCallable | None = paper_plateau,
        scheduler_monitor: str = "val_loss",
        threshold_seed: int = 0,
        feature_statistics_clips: int = 0,
        metadata: dict[str, Any] | None = None,
        feature_hop_seconds: float = AUDIOSET_SEGMENT_SECONDS,
        decision_thresholds: str | float = "tuned",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.decision_thresholds = parse_decision_thresholds(decision_thresholds)
        if isinstance(classes, str):
            self.classes = class_names(classes)
        else:
            self.classes = list(classes) if classes is not None else event_names()
        if frontend is None and (frontend_args or feature_statistics_clips > 0):
            raise AvtagError("frontend_args and feature_statistics_clips need a front-end (model.frontend is null)")
        self.feature_hop_seconds = float(feature_hop_seconds)
        try:
            self.frontend = None if frontend is None else LogMelFrontEnd.from_preset(frontend, **(frontend_args or {}))
            self.model = build_model(model_name, **self._complete_model_args(model_name, model_args or {}))
        except (ValueError, TypeError) as err:  # unknown name or argument in a config: a user error
            raise AvtagError(f"bad model/front-end configuration: {err}") from None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.threshold_seed = threshold_seed
        self.feature_statistics_clips = feature_statistics_clips
        self.metadata = dict(metadata or {})
        self.validation_clip_ids: list[str] | None = None
        self.thresholds: list[float] = self._fixed_thresholds() or [0.5] * len(self.classes)
        self.validation_scores: dict[str, float] = {}
        self._val_batches: list[tuple[Tensor, Tensor, Tensor]] = []
        self._warned_absent: set[tuple[int, ...]] = set()

    def _fixed_thresholds(self) -> list[float] | None:
        """The thresholds of a mode that tunes nothing (None for "tuned")."""
        return fixed_thresholds(self.decision_thresholds, len(self.classes))

    def _complete_model_args(self, model_name: str, model_args: dict[str, Any]) -> dict[str, Any]:
        accepted = inspect.signature(get(model_name).__init__).parameters
        completed = dict(model_args)
        if "num_classes" in accepted:
            completed.setdefault("num_classes", len(self.classes))
        if "n_mels" in accepted and self.frontend is not None:
            completed.setdefault("n_mels", self.frontend.n_mels)
        return completed

    @property
    def input_key(self) -> str:
        """The batch entry the module consumes: ``"waveform"``, or ``"features"`` without a front-end."""
        return "waveform" if self.frontend is not None else "features"

    # ------------------------------------------------------------------ compute

    def forward(self, inputs: Tensor) -> TaggingOutput:
        """``inputs``: waveforms (B, N), or features (B, T, F) when there is no front-end."""
        features = self.frontend(inputs) if self.frontend is not None else inputs  # front-end: float32, autocast off inside
        output = self.model(features)
        if output.frame_probs is not None and output.frame_probs.shape[1] > 0:
            hop = self.frontend.hop_seconds if self.frontend is not None else self.feature_hop_seconds
            output.frame_hop = segment_hop_seconds(output, hop, features.shape[1])
        return output

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        output = self(batch[self.input_key])
        loss = self.model.loss(output, batch["target"])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True, batch_size=len(batch["target"]))
        return loss

    def on_train_epoch_start(self) -> None:
        optimizers = self.optimizers(use_pl_optimizer=False)
        optimizer = optimizers[0] if isinstance(optimizers, list) else optimizers
        self.log("lr", float(optimizer.param_groups[0]["lr"]), on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        output = self(batch[self.input_key])
        loss = self.model.loss(output, batch["target"])
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=len(batch["target"]))
        self._val_batches.append((batch["index"].detach(), output.clip_probs.detach().float(), batch["target"].detach()))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        output = self(batch[self.input_key])
        self._val_batches.append((batch["index"].detach(), output.clip_probs.detach().float(), batch["target"].detach()))

    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def on_test_epoch_start(self) -> None:
        self._val_batches = []

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Clip indices, probabilities and binary targets of every evaluated clip (all ranks)."""
        indices = torch.cat([b[0] for b in self._val_batches])
        probs = torch.cat([b[1] for b in self._val_batches])
        targets = torch.cat([b[2] for b in self._val_batches])
        self._val_batches = []
        if self.trainer.world_size > 1:  # every process sees every clip
            indices, probs, targets = (self.all_gather(t).flatten(0, 1) for t in (indices, probs, targets))
        indices, first = np.unique(indices.cpu().numpy(), return_index=True)  # DDP pads shards with repeats
        return indices, probs.cpu().numpy()[first].astype(np.float64), targets.cpu().numpy()[first] > 0.5

    def _decision_thresholds(self, probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """This epoch's thresholds: tuned on (probs, targets) (004 §3.3) or the mode's fixed ones."""
        from avtag.thresholds import tune_thresholds

        fixed = self._fixed_thresholds()
        if fixed is not None:
            return np.asarray(fixed)
        tuned = tune_thresholds(targets, probs, seed=self.threshold_seed)
        warning = tuned.absent_warning(self.classes)
        if warning and tuple(tuned.absent_classes) not in self._warned_absent and not self.trainer.sanity_checking:
            self._warned_absent.add(tuple(tuned.absent_classes))
            rank_zero_warn(f"validation: {warning}")
        return np.asarray(tuned.thresholds)

    def on_validation_epoch_end(self) -> None:
        if not self._val_batches:
            return
        indices, probs_np, targets_np = self._gathered()
        thresholds = self._decision_thresholds(probs_np, targets_np)
        scores = epoch_scores(probs_np, targets_np, thresholds, prefix="val")
        for name, value in scores.items():
            self.log(name, value, prog_bar=name in (SELECTION_METRIC, "val_map"), sync_dist=True)  # equal on all ranks
        if not self.trainer.sanity_checking:
            self.thresholds = [float(t) for t in thresholds]
            self.validation_scores = scores | {"epoch": int(self.current_epoch), "clips": int(len(indices))}
            self.validation_clip_ids = self._clip_ids(self.trainer.val_dataloaders, indices)

    @staticmethod
    def _clip_ids(dataloaders: Any, indices: np.ndarray) -> list[str] | None:
        """The ids of the evaluated clips, when the dataset has manifest records (else None)."""
        loader = dataloaders[0] if isinstance(dataloaders, list) else dataloaders
        records = getattr(getattr(loader, "dataset", None), "records", None)
        if records is None:
            return None
        return [str(records[int(i)].id) for i in indices]

    def on_test_epoch_end(self) -> None:
        """Score the test manifest with the checkpoint's thresholds; write avtag.evaluate's files."""
        from avtag.evaluate_outputs import print_report, write_dataset_outputs

        if not self._val_batches:
            return
        indices, probs_np, targets_np = self._gathered()
        thresholds = np.asarray(self._fixed_thresholds() or self.thresholds, dtype=np.float64)
        for name, value in epoch_scores(probs_np, targets_np, thresholds, prefix="test").items():
            self.log(name, value, sync_dist=True)
        if not self.trainer.is_global_zero:
            return
        dataloader = self.trainer.test_dataloaders
        dataset = (dataloader[0] if isinstance(dataloader, list) else dataloader).dataset
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test"
        header = {"checkpoint": str(self.trainer.ckpt_path), "manifest": str(getattr(dataset, "manifest", ""))}
        metrics = write_dataset_outputs(
            out, header, dataset, indices, targets_np, probs_np, self.classes, thresholds, self._threshold_source()
        )
        print_report(out, metrics)

    def _threshold_source(self) -> str:
        return threshold_source(self.decision_thresholds)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, ReduceLROnPlateau):
            config["monitor"] = self.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_train_start(self) -> None:
        """Models whose loss weights come from the training labels (M&mnet's eq. 11 with
        ``class_weights: auto``) get them here, once the training data is loaded."""
        if not getattr(self.model, "auto_class_weights", False):
            return
        loader = self.trainer.train_dataloader
        targets = getattr(getattr(loader, "dataset", None), "targets", None)
        if targets is None:
            raise AvtagError("class_weights: auto needs a training dataset with a .targets label matrix")
        self.model.fit_class_weights(targets)

    def on_fit_start(self) -> None:
        count = self.feature_statistics_clips
        if count <= 0 or self.frontend is None or self.frontend.standardize:
            return
        dataset = self.trainer.datamodule.datasets["train"]
        picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
        fit_statistics(self.frontend, (dataset[int(i)]["waveform"].to(self.device) for i in picks))

    # ------------------------------------------------------------------ persistence

    def to_tagger(self) -> AudioTagger:
        """The trained front-end + model as an :class:`AudioTagger` (shares the modules)."""
        if self.frontend is None:
            raise AvtagError(
                f"model {self.model.model_name!r} takes precomputed features, not waveforms: it has no AudioTagger"
            )
        return AudioTagger(self.model, self.frontend, self.classes, self.thresholds, self._metadata())

    def _metadata(self) -> dict[str, Any]:
        inputs = {"input": "features", "feature_hop_seconds": self.feature_hop_seconds} if self.frontend is None else {}
        return plain(
            self.metadata
            | inputs
            | {
                "avtag_version": avtag.__version__,
                "thresholds": self._threshold_source(),
                "validation": self.validation_scores,
            }
            # the clips the thresholds were tuned on: batch evaluation refuses to report on them
            | ({"thresholds_tuned_on": {"split": "validation", "clip_ids": self.validation_clip_ids}}
               if self.decision_thresholds == "tuned" and self.validation_clip_ids else {})
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metadata = self._metadata() | {"epoch": int(self.current_epoch), "global_step": int(self.global_step)}
        checkpoint["avtag"] = avtag_entry(self.model, self.frontend, self.classes, self.thresholds, metadata)
        make_hyper_parameters_plain(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        package = checkpoint.get("avtag") or {}
        if "thresholds" in package:
            from avtag.validate import require_finite

            values = require_finite(package["thresholds"], "checkpoint thresholds", low=0.0, high=1.0)
            if len(values) != len(self.classes):
                raise AvtagError(f"checkpoint has {len(values)} thresholds for {len(self.classes)} classes")
            self.thresholds = [float(t) for t in values]
        if self.frontend is not None and (package.get("frontend") or {}).get("standardize"):
            self.frontend.standardize = True


__all__ = ["SELECTION_METRIC", "TaggingModule", "paper_plateau", "paper_sgd"]
