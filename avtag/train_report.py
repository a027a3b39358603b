"""What ``avtag train`` tells the user when a run ends: where the best and the last
checkpoints are (their real paths, wherever Lightning put them) and what stopped the run
(``max_steps``, ``max_epochs``, ``max_time``, early stopping, an interrupt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer


def stop_reason(trainer: Any) -> str:
    """Why ``trainer.fit`` returned, in words."""
    if getattr(trainer, "interrupted", False):
        return "interrupted"
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and getattr(callback, "_duration", None) is not None:
            remaining = callback.time_remaining("train")
            if remaining is not None and remaining <= 0:
                return f"max_time ({callback._duration:.0f} s) reached"
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return f"early stopping on {callback.monitor} (epoch {callback.stopped_epoch})"
    if trainer.max_steps is not None and trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"max_steps ({trainer.max_steps}) reached"
    if trainer.max_epochs is not None and trainer.max_epochs != -1 and trainer.current_epoch >= trainer.max_epochs:
        return f"max_epochs ({trainer.max_epochs}) reached"
    return "training loop finished"


def fit_summary(trainer: Any) -> list[str]:
    """Lines naming the best and last checkpoints and the stop reason."""
    lines = [f"stopped: {stop_reason(trainer)} after {trainer.global_step} steps, {trainer.current_epoch} epochs"]
    for callback in trainer.callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.monitor is not None:
            if callback.best_model_path:
                score = callback.best_model_score
                value = f" {float(score):.4f}" if score is not None else ""
                lines.append(f"best checkpoint ({callback.monitor}{value}): {Path(callback.best_model_path).resolve()}")
            else:
                lines.append(f"no best checkpoint: {callback.monitor} was never logged (did validation run?)")
        elif callback.last_model_path or callback.best_model_path:
            lines.append(f"last checkpoint: {Path(callback.last_model_path or callback.best_model_path).resolve()}")
    return lines


__all__ = ["fit_summary", "stop_reason"]
