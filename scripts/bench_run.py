"""Wall time and peak memory of ``python -m avtag.run`` on one ~10 s clip, and batch
throughput of ``scripts/eval_dcase17.py``; prints a table.

    python scripts/bench_run.py [--video clip.mp4] [--audio-checkpoint DIR] [--repeats 3]
                                [--batch-clips 8] [--cores 2]

Each measurement is a fresh process (imports and model loading included), pinned to
``--cores`` CPU cores with ``taskset`` when available and ``OMP_NUM_THREADS`` set to match;
peak memory is the child's maximum resident set size (``wait4``). Without
``--audio-checkpoint`` an *untrained* CRNN (004 §3.2 architecture) is exported to a temporary
folder for timing: speed does not depend on the weights, and the output says so. The default
clip is ``../shared/data/videos/chaplin.mp4`` (9.6 s, with sound) when present, otherwise a
synthetic 10 s video with a tone is written with PyAV.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "videos" / "chaplin.mp4"


def synthetic_clip(path: Path, seconds: float = 10.0) -> Path:
    """A 10 s 320x240 25 fps video (moving gradient) with a 440 Hz tone, via PyAV."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=22050)
        ramp = np.linspace(0, 255, 320, dtype=np.float32)
        for i in range(int(seconds * 25)):
            frame = np.empty((240, 320, 3), np.uint8)
            frame[...] = ((ramp + 8 * i) % 256).astype(np.uint8)[None, :, None]
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        t = np.arange(int(seconds * 22050)) / 22050
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start:start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = 22050
            frame.pts = start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


def export_untrained_crnn(out_dir: Path) -> Path:
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger

    torch.manual_seed(0)
    tagger = AudioTagger(build_model("crnn"), LogMelFrontEnd.from_preset("crnn"),
                         metadata={"note": "untrained, exported by bench_run.py for timing only"})
    return tagger.export(out_dir)


def timed(command: list[str], cores: int) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of a fresh process on ``cores`` cores."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cores), MKL_NUM_THREADS=str(cores), PYTHONWARNINGS="ignore")
    if shutil.which("taskset") and (os.cpu_count() or 1) >= cores:
        command = ["taskset", "-c", ",".join(str(c) for c in range(cores)), *command]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.read().decode(errors="replace"))
    return wall, usage.ru_maxrss / 1024.0, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="clip to time (default: ../shared chaplin.mp4, else synthetic)")
    parser.add_argument("--audio-checkpoint", help="exported AudioTagger (default: an untrained CRNN export)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-clips", type=int, default=8, help="clips in the throughput run (0: skip)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="avtag-bench-") as tmp:
        tmp_dir = Path(tmp)
        video = Path(args.video) if args.video else (DEFAULT_CLIP if DEFAULT_CLIP.exists() else None)
        if video is None:
            video = synthetic_clip(tmp_dir / "synthetic.mp4")
            print("clip: synthetic 10 s video with a tone (no ../shared clip found)")
        else:
            print(f"clip: {video}")
        checkpoint = args.audio_checkpoint
        if checkpoint is None:
            checkpoint = str(export_untrained_crnn(tmp_dir / "crnn"))
            print("audio model: UNTRAINED CRNN export (architecture of 004 §3.2), for timing only")
        else:
            print(f"audio model: {checkpoint}")

        run = [sys.executable, "-m", "avtag.run", "--video", str(video), "--quiet"]
        configs = {
            "avtag.run, video branch alone (embedded defaults)": run,
            "avtag.run, CRNN + video, fused": [*run, "--audio-checkpoint", checkpoint],
            "avtag.run, CRNN + video + HTML report": [*run, "--audio-checkpoint", checkpoint,
                                                      "--report", str(tmp_dir / "r.html")],
        }
        rows = []
        for name, command in configs.items():
            walls, peaks = [], []
            for _ in range(args.repeats):
                wall, peak, code = timed(command, args.cores)
                if code != 0:
                    print(f"{name}: failed with exit code {code}")
                    break
                walls.append(wall)
                peaks.append(peak)
            if walls:
                rows.append((name, f"{statistics.median(walls):.2f} s", f"{min(walls):.2f} s", f"{max(peaks):.0f} MiB"))

        if args.batch_clips > 0:
            clips = tmp_dir / "clips"
            clips.mkdir()
            for i in range(args.batch_clips):
                (clips / f"clip{i:03d}{video.suffix}").symlink_to(video.resolve())
            command = [sys.executable, str(ROOT / "scripts" / "eval_dcase17.py"), "--clips-dir", str(clips),
                       "--out", str(tmp_dir / "eval"), "--audio-checkpoint", checkpoint,
                       "--workers", str(args.cores), "--quiet"]
            wall, peak, code = timed(command, args.cores)
            if code == 0:
                rows.append((f"eval_dcase17.py, {args.batch_clips} clips, CRNN + video",
                             f"{args.batch_clips / wall:.2f} clips/s", f"{wall:.1f} s total", f"{peak:.0f} MiB"))

    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"pinned to {args.cores}; {args.repeats} runs each (fresh processes)")
    header = ("measurement", "median wall", "best wall", "peak RSS")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    print("target: <= 4 s for a 10 s clip with the embedded defaults and a CRNN checkpoint, 2 CPU cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
