"""The CRNN learns to tag REAL audio: weakly-labelled soundscapes mixed from ESC-50
recordings (../shared/data/esc50, avtag.data.soundscapes), trained with the avtag
training stack (TaggingModule + ClipDataModule + Lightning) and evaluated with
``avtag.evaluate`` on soundscapes built from held-out source recordings.

Bounded CPU budget, so the test departs from 004's recipe in three documented ways:
5 s soundscapes instead of 10 s; conv channels 16-16-32-32 instead of 64-64-128-128 (same
layers, pooling, BiGRU(100), max-pooling MIL); Adam (lr 2e-3) instead of SGD lr 0.1 with
1e-3 clipping, which needs thousands of steps. The front-end is 004's (20 kHz, 60 mel).

The bar: held-out mAP at least the label-prior baseline + 0.3 (measured 0.628 vs 0.266, +0.36,
after 400 steps, about 3 minutes on a quiet 2-core CPU). The prior baseline (every
clip scored by the class frequency) has an AP per class equal to that class's positive
rate, so its mAP is the mean positive rate (about 0.25 here: 1-3 of 8 classes per clip).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from conftest import shared_path

TRAIN_CLIPS, VAL_CLIPS, TEST_CLIPS = 200, 40, 80
SECONDS = 5.0
TRAIN_STEPS = 400
MARGIN = 0.3  # measured: test mAP 0.628 vs prior 0.266 (+0.36) after 400 steps


@pytest.mark.slow
def test_crnn_learns_esc50_soundscapes(tmp_path_factory, all_cores):
    import lightning as L

    from avtag.data.datasets import ClipDataModule
    from avtag.data.manifests import read_manifest, write_manifest
    from avtag.data.soundscapes import make_soundscapes
    from avtag.evaluate import evaluate
    from avtag.train import TaggingModule

    esc50 = shared_path("data", "esc50")
    root = tmp_path_factory.mktemp("soundscapes")
    started = time.perf_counter()
    made = make_soundscapes(esc50, root, TRAIN_CLIPS + VAL_CLIPS, TEST_CLIPS, seed=0, seconds=SECONDS)
    records = read_manifest(made.manifests["train"])
    # validation (threshold tuning, model selection): the last VAL_CLIPS training soundscapes
    train_manifest = write_manifest(records[:TRAIN_CLIPS], root / "train_part.jsonl")
    val_manifest = write_manifest(records[TRAIN_CLIPS:], root / "val_part.jsonl")
    made_seconds = time.perf_counter() - started

    torch.manual_seed(0)
    module = TaggingModule(
        model_name="crnn",
        model_args={"conv_channels": [16, 16, 32, 32], "pooling": "max"},
        frontend="crnn",
        frontend_args={"clip_seconds": SECONDS},
        classes=made.classes,
        optimizer=_adam,
        scheduler=None,
    )
    data = ClipDataModule(str(train_manifest), str(val_manifest), batch_size=16, num_workers=0, epoch_batches=25, seed=0)
    best = L.pytorch.callbacks.ModelCheckpoint(monitor="val_micro_f1", mode="max")  # 004 §3.3 selection
    trainer = L.Trainer(
        max_steps=TRAIN_STEPS, accelerator="cpu", default_root_dir=root / "run", logger=False, callbacks=[best],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(module, data)
    train_seconds = time.perf_counter() - started

    metrics = evaluate(best.best_model_path, made.manifests["test"], root / "eval", batch_size=16)
    test_targets = np.array([[label in r.labels for label in made.classes] for r in read_manifest(made.manifests["test"])])
    prior_map = float(test_targets.mean(axis=0).mean())
    summary = {
        "soundscapes_seconds": round(made_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "steps": trainer.global_step,
        "best_val_micro_f1": round(float(best.best_model_score), 3),
        "test_mAP": round(metrics["mAP"], 3),
        "test_prior_mAP": round(prior_map, 3),
        "test_mAUC": round(metrics["mAUC"], 3),
        "test_micro_f1": round(metrics["micro"]["f1"], 3),
        "test_segment_f1": round(metrics.get("localisation", {}).get("segment_f1", float("nan")), 3),
    }
    print("\nreal-audio learning:", json.dumps(summary))
    assert metrics["mAP"] >= prior_map + MARGIN, summary
    assert metrics["mAUC"] >= 0.70, summary  # measured 0.761


def _adam(params):
    return torch.optim.Adam(params, lr=2e-3)
