"""Training with Lightning: ``avtag train fit --config configs/crnn_maxpool.yaml``
(= ``python -m avtag.train fit ...``); also ``validate`` and ``test``.

:class:`TrainCLI` is LightningCLI around :class:`avtag.tagging_module.TaggingModule` (the
recipe defaults, threshold modes and checkpoint contents are documented there). This module
adds what the command line needs: 004's model selection callback, a ``last.ckpt`` for
resumption, safe resumption (:mod:`avtag.resume`: a local file, weights-only, the model
configuration rebuilt from the checkpoint's ``"avtag"`` entry, nothing instantiated from
checkpoint data), and the end-of-fit summary (:mod:`avtag.train_report`: the real paths of
the best and last checkpoints, what stopped the run).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from avtag.data.datasets import ClipDataModule
from avtag.errors import cli_guard
from avtag.resume import check_ckpt_path, load_resume_checkpoint, resume_overrides
from avtag.tagging_module import SELECTION_METRIC, TaggingModule, paper_plateau, paper_sgd
from avtag.train_report import fit_summary

DEFAULT_DATA_MODULE = f"{ClipDataModule.__module__}.{ClipDataModule.__qualname__}"


class TrainCLI(LightningCLI):
    """LightningCLI with 004's model selection and mixed precision on GPUs by default.

    Two checkpoint callbacks: ``checkpoint`` keeps the best model by validation micro-F1
    (004 §3.3; ``checkpoint.monitor: val_map`` for ranking-scored configs) and
    ``last_checkpoint`` rewrites ``last.ckpt`` after every epoch, for ``--ckpt_path``
    resumption (Lightning 2.6's ``save_last`` only writes when the best model changes).
    Subcommands: ``fit``, ``validate``, ``test`` (``predict`` is not offered: ``avtag
    evaluate`` writes the probabilities of a manifest).

    With ``subclass_mode_data`` (as :func:`main` runs it) the config picks the data
    module with ``data.class_path``; a ``data`` section without one configures
    :class:`ClipDataModule`.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        return {name: commands[name] for name in ("fit", "validate", "test")}

    def add_arguments_to_parser(self, parser: Any) -> None:
        if self.subclass_mode_data:
            parser.set_defaults({"data": {"class_path": DEFAULT_DATA_MODULE}})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": SELECTION_METRIC,
                "checkpoint.mode": "max",
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "epoch{epoch:03d}-f1{val_micro_f1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.filename": "last",
                "last_checkpoint.enable_version_counter": False,
                "trainer.precision": "16-mixed" if torch.cuda.is_available() else "32-true",
            }
        )

    def _parse_ckpt_path(self) -> None:
        """Replaces LightningCLI's: never applies a checkpoint's ``hyper_parameters``; the
        model settings come from the checkpoint's ``"avtag"`` entry (see :mod:`avtag.resume`),
        and Lightning loads the file weights-only."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        settings = self.config[subcommand]
        if "weights_only" in settings:
            settings["weights_only"] = True
        path = check_ckpt_path(settings.get("ckpt_path"))
        if path is None:
            return
        overrides = resume_overrides(load_resume_checkpoint(path), path)
        self.config = self.parser.parse_object({subcommand: {"model": overrides}}, self.config)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print("\n".join(fit_summary(self.trainer)), flush=True)

@cli_guard
def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m avtag.train {fit,validate,test} --config ...``."""
    if args is not None:
        args = list(args)
    TrainCLI(
        TaggingModule,
        L.LightningDataModule,
        subclass_mode_data=True,  # data.class_path: ClipDataModule (default) or EmbeddingDataModule
        args=args,
        save_config_kwargs={"overwrite": True},
    )


__all__ = ["SELECTION_METRIC", "TaggingModule", "TrainCLI", "main", "paper_plateau", "paper_sgd"]

if __name__ == "__main__":
    from avtag.train import main as _main  # classes from avtag.train, not __main__, in saved configs

    _main()
