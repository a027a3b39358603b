"""Train every audio model family on the same ESC-50 soundscapes with an equal budget and
print one markdown table.

    python scripts/compare_models.py --events-dir ../shared/data/esc50 --quick
    python scripts/compare_models.py --events-dir ../shared/data/esc50 --budget seconds --seconds 600

Families: the CRNN of 004 with each MIL pooling (max, average, linear softmax,
exponential softmax, attention), the multi-level attention model of 000, AT-SCA of
001, M&mnet and M&mnet-MS of 002, and GL-AT (003) around the CRNN.

Protocol (the same for every family):

* Data: soundscapes mixed from the ESC-50 recordings by
  :func:`avtag.data.soundscapes.make_soundscapes` (recordings split by source between
  train and test); validation = further soundscapes from the train recordings. Clip labels
  are the mixed events; the known onsets/offsets are the localisation truth.
* Features: each family uses its paper's front-end preset ("crnn", "xu", "sca", "mmnet");
  ``--frontend PRESET`` forces one preset on all. Waveforms are resampled once per
  preset with torchaudio.
* Budget: ``--budget steps`` (default) gives every family the same number of optimizer
  steps of the same batch size (so the same number of training clips);
  ``--budget seconds`` gives every family the same wall-clock training time
  (Lightning ``max_time``). Training runs through :class:`avtag.train.TaggingModule`
  and a Lightning ``Trainer`` (``max_steps``), Adam with one learning rate for all.
* Scores on the test set: mAP (scikit-learn, via :func:`avtag.metrics.ranking_scores`);
  micro-F1 with class thresholds tuned on the VALIDATION set (004 §3.3,
  :func:`avtag.thresholds.tune_thresholds`) and applied unchanged to the test set;
  segment-based localisation F1 (:func:`avtag.metrics.segment_based_f1`) of each
  model's ``frame_probs`` against the known event spans, with the same thresholds.
* Speed: training clips/s = steps x batch / training time (front-end included);
  inference clips/s over the test set in batches of ``--batch-size`` (front-end included).

The small ``--quick`` setting (small widths, short clips, few steps) runs on two CPU
cores in a few minutes; its numbers rank implementations, not papers.
"""

from __future__ import annotations

import argparse
import math
import os
import logging
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader, Dataset

from avtag.audio.features import PRESETS, expected_frames
from avtag.errors import InputFileError, cli_guard

POOLINGS = ("max", "average", "linear_softmax", "exp_softmax", "attention")


# --------------------------------------------------------------------------- families


@dataclass
class Family:
    """One row of the table: a registered model with its arguments and front-end."""

    label: str
    model_name: str
    frontend: str
    model_args: dict[str, Any] = field(default_factory=dict)


def families(quick: bool) -> list[Family]:
    """The compared models; ``quick`` shrinks the widths for a CPU smoke run."""
    crnn_small = dict(conv_channels=[16, 16, 32, 32], rnn_hidden=32) if quick else {}
    mmnet_small = dict(channels=[32, 64, 96, 96], classifier_hidden=[128], attention_heads=16) if quick else {}
    rows = [Family(f"crnn ({p})", "crnn", "crnn", dict(pooling=p, **crnn_small)) for p in POOLINGS]
    rows += [
        Family(
            "multilevel",
            "multilevel",
            "xu",
            dict(encoder_channels=16, encoder_dim=64, hidden_dim=64, gru_hidden=32, depth=3) if quick else {},
        ),
        Family("sca", "sca", "sca", dict(channels=[8, 16, 16, 32, 32, 64, 64], reduction=4) if quick else {}),
        Family("mmnet", "mmnet", "mmnet", mmnet_small),
        Family("mmnet_ms", "mmnet_ms", "mmnet", mmnet_small),
        Family(
            "glat (crnn)",
            "glat",
            "crnn",
            dict(backbone="crnn", backbone_args=dict(pooling="max", **crnn_small), num_local_clips=3 if quick else 5,
                 local_seconds=1.5 if quick else 3.0),
        ),
    ]
    return rows


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    """Soundscapes of one split: waveforms at ``sample_rate``, weak targets, true spans."""

    waveforms: torch.Tensor  # (N, samples)
    targets: torch.Tensor  # (N, C)
    events: list[list[Any]]  # per clip: avtag.metrics.EventSpan
    sample_rate: int
    seconds: float

    def resampled(self, rate: int) -> torch.Tensor:
        if rate == self.sample_rate:
            return self.waveforms
        return AF.resample(self.waveforms, self.sample_rate, rate)


class WaveformSet(Dataset):
    """The batch dictionaries :class:`avtag.train.TaggingModule` trains on."""

    def __init__(self, waveforms: torch.Tensor, targets: torch.Tensor) -> None:
        self.waveforms, self.targets = waveforms, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"waveform": self.waveforms[index], "target": self.targets[index], "index": torch.tensor(index)}


def make_splits(args: argparse.Namespace, work_dir: Path) -> tuple[dict[str, Split], list[str]]:
    """Train / validation / test soundscapes from ESC-50 (:mod:`avtag.data.soundscapes`).

    ``make_soundscapes`` splits the ESC-50 recordings by source into train and test; the
    validation clips are further soundscapes mixed from the TRAIN recordings (the first
    ``val_clips`` of the train manifest), so thresholds never see a test recording.
    """
    from avtag.audio.io import load_audio
    from avtag.data.manifests import read_manifest, resolve
    from avtag.data.soundscapes import make_soundscapes

    events_dir = Path(args.events_dir)
    if not (events_dir / "esc50.csv").is_file():
        raise InputFileError("not an ESC-50 folder (no esc50.csv)", events_dir)
    scapes = make_soundscapes(
        events_dir,
        work_dir,
        n_train=args.train_clips + args.val_clips,
        n_test=args.test_clips,
        seed=args.seed,
        sample_rate=args.sample_rate,
        seconds=args.clip_seconds,
    )
    classes = list(scapes.classes)

    def load(records: list[Any]) -> Split:
        waveforms = [load_audio(resolve(work_dir, r.audio), target_sr=args.sample_rate)[0] for r in records]
        targets = np.zeros((len(records), len(classes)), dtype=np.float32)
        for row, record in enumerate(records):
            targets[row, [classes.index(label) for label in record.labels]] = 1.0
        return Split(
            waveforms=torch.as_tensor(np.stack(waveforms)),
            targets=torch.as_tensor(targets),
            events=[list(r.events) for r in records],
            sample_rate=args.sample_rate,
            seconds=args.clip_seconds,
        )

    train_records = read_manifest(scapes.manifests["train"])
    splits = {
        "validation": load(train_records[: args.val_clips]),
        "train": load(train_records[args.val_clips:]),
        "test": load(read_manifest(scapes.manifests["test"])),
    }
    return splits, classes


# --------------------------------------------------------------------------- one family


@dataclass
class Row:
    label: str
    parameters: int
    steps: int
    mean_average_precision: float
    micro_f1: float
    localisation_f1: float
    train_clips_per_second: float
    inference_clips_per_second: float


@torch.inference_mode()
def predict(module: Any, waveforms: torch.Tensor, batch_size: int) -> tuple[np.ndarray, list[np.ndarray], float, float]:
    """Clip probabilities (N, C), per-clip frame probabilities, frame hop, seconds taken."""
    module.eval()
    clip, frames, hop = [], [], math.nan
    start = time.perf_counter()
    for first in range(0, len(waveforms), batch_size):
        output = module(waveforms[first:first + batch_size])
        clip.append(output.clip_probs.float().cpu().numpy())
        if output.frame_probs is not None:
            frames.extend(output.frame_probs.float().cpu().numpy())
            hop = float(output.frame_hop)
    return np.concatenate(clip), frames, hop, time.perf_counter() - start


def run_family(family: Family, splits: dict[str, Split], classes: list[str], args: argparse.Namespace) -> Row:
    from avtag.metrics import ranking_scores, segment_based_f1
    from avtag.thresholds import micro_f1, tune_thresholds
    from avtag.train import TaggingModule

    preset = args.frontend or family.frontend
    rate = PRESETS[preset]["sample_rate"]
    waveforms = {name: split.resampled(rate) for name, split in splits.items()}
    model_args = dict(family.model_args)
    if family.model_name == "glat":  # tau in frames follows the front-end actually used
        model_args["frames_per_second"] = rate / PRESETS[preset]["hop_length"]
    if family.model_name == "sca":  # its local spatial FC is built for one input length
        model_args.setdefault("input_frames", expected_frames(args.clip_seconds, preset))
    L.seed_everything(args.seed, verbose=False)
    module = TaggingModule(
        model_name=family.model_name,
        model_args=model_args,
        frontend=preset,
        frontend_args={"clip_seconds": args.clip_seconds},
        classes=classes,
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
        scheduler=None,
    )
    loader = DataLoader(
        WaveformSet(waveforms["train"], splits["train"].targets),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    budget: dict[str, Any] = (
        {"max_steps": args.steps, "max_epochs": -1}
        if args.budget == "steps"
        else {"max_steps": -1, "max_epochs": -1, "max_time": {"seconds": args.seconds}}
    )
    trainer = L.Trainer(
        accelerator="cpu" if args.cpu else "auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **budget,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    train_seconds = time.perf_counter() - start
    steps = int(trainer.global_step)

    device = next(module.parameters()).device
    val_probs, _, _, _ = predict(module, waveforms["validation"].to(device), args.batch_size)
    test_probs, test_frames, hop, test_seconds = predict(module, waveforms["test"].to(device), args.batch_size)
    val_truth = splits["validation"].targets.numpy() > 0.5
    test_truth = splits["test"].targets.numpy() > 0.5
    thresholds = tune_thresholds(val_truth, val_probs.astype(np.float64), seed=args.seed).thresholds  # never test
    localisation = math.nan
    if test_frames:
        localisation = segment_based_f1(
            test_frames,
            hop,
            thresholds,
            splits["test"].events,
            classes,
            segment_length=args.segment_seconds,
            clip_durations=[args.clip_seconds] * len(test_frames),
        ).f1
    return Row(
        label=family.label,
        parameters=module.model.num_parameters,
        steps=steps,
        mean_average_precision=ranking_scores(test_truth, test_probs).mean_average_precision,
        micro_f1=micro_f1(test_truth, test_probs.astype(np.float64), thresholds),
        localisation_f1=localisation,
        train_clips_per_second=steps * args.batch_size / train_seconds,
        inference_clips_per_second=len(test_probs) / test_seconds,
    )


# --------------------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{os.cpu_count()}-core CPU ({cpu}), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| model | parameters | steps | test mAP | test micro-F1 (val thresholds) | localisation F1 | train clips/s | inference clips/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.parameters / 1e6:.2f} M | {r.steps} | {r.mean_average_precision:.3f} | "
            f"{r.micro_f1:.3f} | {r.localisation_f1:.3f} | {r.train_clips_per_second:.1f} | "
            f"{r.inference_clips_per_second:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-dir", required=True, help="ESC-50 folder (esc50.csv + audio/), e.g. ../shared/data/esc50")
    parser.add_argument("--quick", action="store_true", help="small widths, 5-s clips, 40 steps of 8: minutes on 2 CPU cores")
    parser.add_argument("--budget", choices=("steps", "seconds"), default="steps", help="equal optimizer steps or equal wall-clock")
    parser.add_argument("--steps", type=int, help="optimizer steps per family (budget=steps)")
    parser.add_argument("--seconds", type=float, default=600.0, help="training seconds per family (budget=seconds)")
    parser.add_argument("--batch-size", type=int, help="clips per batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, all families")
    parser.add_argument("--clip-seconds", type=float, help="soundscape length")
    parser.add_argument("--sample-rate", type=int, default=44100, help="soundscape rate (ESC-50 is 44.1 kHz)")
    parser.add_argument("--train-clips", type=int)
    parser.add_argument("--val-clips", type=int)
    parser.add_argument("--test-clips", type=int)
    parser.add_argument("--segment-seconds", type=float, default=1.0, help="segment length of the localisation F1")
    parser.add_argument("--frontend", choices=sorted(PRESETS), help="one front-end preset for every family")
    parser.add_argument("--models", nargs="*", help="only these rows (labels as printed, e.g. mmnet 'crnn (max)')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    defaults = (
        dict(steps=40, batch_size=8, clip_seconds=5.0, train_clips=160, val_clips=48, test_clips=48)
        if args.quick
        else dict(steps=3000, batch_size=32, clip_seconds=10.0, train_clips=3000, val_clips=500, test_clips=500)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _quiet_lightning() -> None:
    """Keep the table readable: no Lightning banners or known-harmless warnings."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    for message in (".*removed from hparams.*", ".*no `val_dataloader`.*", ".*LeafSpec.*", ".*num_workers.*"):
        warnings.filterwarnings("ignore", message=message)


@cli_guard
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="avtag_compare_") as work_dir:
        splits, classes = make_splits(args, Path(work_dir))
    selected = [f for f in families(args.quick) if not args.models or f.label in args.models]
    rows = []
    for family in selected:
        print(f"training {family.label} ...", flush=True)
        rows.append(run_family(family, splits, classes, args))
    budget = f"{args.steps} steps of {args.batch_size} clips" if args.budget == "steps" else f"{args.seconds:g} s each"
    print()
    print(f"Machine: {machine()}")
    print(
        f"Data: ESC-50 soundscapes, {len(classes)} classes, {args.clip_seconds:g}-s clips, "
        f"{args.train_clips}/{args.val_clips}/{args.test_clips} train/val/test; budget {budget}; Adam lr {args.lr:g}; "
        f"seed {args.seed}; {'quick widths' if args.quick else 'paper widths'}"
    )
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
