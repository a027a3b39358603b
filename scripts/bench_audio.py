"""Throughput and peak memory of front-end + model, for every registered audio model.

    python scripts/bench_audio.py                       # all models, CPU (+ GPU if present)
    python scripts/bench_audio.py --models crnn --batch-size 16 --steps 5

For each model (built with its default arguments; ``n_mels`` from its front-end preset,
``default_frontend`` class attribute or "crnn"; models declaring ``default_frontend =
None`` take no log-mel input and are skipped) and each device, it times

- inference: waveform batch (``--batch-size`` clips of 10 s) -> front-end -> model,
  under ``torch.inference_mode`` (AMP float16 autocast on GPU);
- a training step: front-end (no grad) -> forward -> ``model.loss`` -> backward ->
  SGD step (AMP with a gradient scaler on GPU),

after ``--warmup`` untimed iterations, and prints a markdown table of clips/s and peak
memory: the peak RSS of a process that benchmarks that model alone on CPU (each model
runs in its own subprocess; the training row's peak includes inference), and
``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from avtag.audio.features import LogMelFrontEnd
from avtag.audio.models import available_models, get
from avtag.errors import cli_guard


def build(name: str, num_classes: int) -> tuple[LogMelFrontEnd, torch.nn.Module, str]:
    """Front-end of the model's preset and the model with its default arguments."""
    cls = get(name)
    preset = getattr(cls, "default_frontend", "crnn")
    frontend = LogMelFrontEnd.from_preset(preset)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    if "n_mels" in params:
        kwargs["n_mels"] = frontend.n_mels
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    return frontend, cls(**kwargs), preset


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def timed(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def bench_one(name: str, device: torch.device, batch: int, warmup: int, steps: int, num_classes: int) -> list[dict]:
    torch.manual_seed(0)
    frontend, model, preset = build(name, num_classes)
    frontend, model = frontend.to(device), model.to(device)
    amp = device.type == "cuda"
    waveform = torch.randn(batch, frontend.clip_samples, device=device) * 0.1
    targets = (torch.rand(batch, num_classes, device=device) < 0.2).float()
    rows = []

    model.eval()

    def infer() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            model(frontend(waveform))

    if amp:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(infer, device, warmup, steps)
    rows.append(_row(name, preset, device, "inference", batch, seconds, amp, model))

    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.8, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def train_step() -> None:
        with torch.no_grad():
            features = frontend(waveform)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = model.loss(model(features), targets)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    if amp:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(train_step, device, warmup, steps)
    rows.append(_row(name, preset, device, "train step", batch, seconds, amp, model))
    return rows


def _row(name, preset, device, mode, batch, seconds, amp, model) -> dict:
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mib()
    return {
        "model": name, "front-end": preset, "device": device.type + (" (AMP fp16)" if amp else ""),
        "mode": mode, "batch": batch, "clips/s": batch / seconds, "ms/batch": 1000 * seconds,
        "peak MiB": memory, "memory": "GPU allocated" if device.type == "cuda" else "process RSS",
        "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def markdown(rows: list[dict]) -> str:
    columns = ["model", "front-end", "params (M)", "device", "mode", "batch", "clips/s", "ms/batch", "peak MiB", "memory"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@cli_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="registered model names (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=17)
    parser.add_argument("--devices", nargs="+", default=None, help="e.g. cpu cuda (default: cpu, and cuda if present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one model, rows as JSON
    args = parser.parse_args(argv)
    names = args.models or available_models()
    unknown = sorted(set(names) - set(available_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; available: {', '.join(available_models())}")
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda given but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    skipped = [n for n in names if getattr(get(n), "default_frontend", "crnn") is None]
    for name in skipped:
        print(f"skipping {name}: it declares no log-mel front-end (default_frontend = None)", file=sys.stderr)
    names = [n for n in names if n not in skipped]
    if args.json:  # the child process of one model
        rows = [row for d in devices for row in bench_one(names[0], torch.device(d), args.batch_size, args.warmup,
                                                         args.steps, args.num_classes)]
        print(json.dumps(rows))
        return 0
    rows = []
    for name in names:  # one process per model, so each peak RSS is that model's own
        command = [sys.executable, __file__, "--json", "--models", name, "--devices", *devices,
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--num-classes", str(args.num_classes)] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr.strip()}", file=sys.stderr)
            continue
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    rows.sort(key=lambda row: row["device"])
    gpu = f", GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads{gpu}; 10 s clips\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
