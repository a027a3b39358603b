"""Benchmark the video side: DS3 ADMM vs the cvxpy reference, and the whole video branch.

    python scripts/bench_video.py                 # DS3 table at n = 240 frames (004 §3.4)
    python scripts/bench_video.py --branch        # plus the video branch on a 10 s 640x360 clip
    python scripts/bench_video.py --branch --video clip.mp4   # ... on your own clip

Targets: ADMM >= 20x faster than cvxpy with the same key frames; the branch <= 3 s wall per
10 s clip on 2 CPU cores with default settings. CUDA figures are added when a GPU is present.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avtag.errors import cli_guard
from avtag.video.keyframes import (
    default_alpha,
    ds3_admm,
    ds3_cvxpy,
    ds3_representatives,
    normalise_dissimilarities,
    pairwise_distances,
    select_keyframes_batch,
)


def synthetic_instances(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Frame features of two kinds of clip: 4 scenes of unequal length, and a slow drift."""
    rng = np.random.default_rng(seed)
    sizes = [n // 2, n // 4, n // 8, n - n // 2 - n // 4 - n // 8]
    scenes = np.concatenate([rng.normal(6 * s, 1.0, size=(m, 16)) for s, m in enumerate(sizes)])
    drift = np.cumsum(rng.normal(0, 0.3, size=(n, 16)), 0) + rng.normal(0, 0.2, size=(n, 16))
    return {"scenes": scenes, "drift": drift}


def real_instances(n: int, root: Path) -> dict[str, np.ndarray]:
    """Recognizer features (the video branch's) of the first n frames, sampled at 24 fps
    (004 §3.4: 240 frames per 10 s), of the real clips under ``root`` (the repository's
    ../shared/data/videos)."""
    from avtag.video.decode import decode_video
    from avtag.video.recognize import load_recognizer

    if not root.is_dir():
        return {}
    recognizer = load_recognizer("efficientnet_lite0")
    out = {}
    for name in ("car-detection.mp4", "motorcycle.mp4", "v_ZNVhz7ctTq0.mp4"):
        if (root / name).is_file():
            video = decode_video(root / name, fps=24.0, max_side=640, with_audio=False)
            out[name.split(".")[0][:9]] = recognizer(video.frames[:n]).features
    return out


def timed(fn, repeats: int = 1):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return result, min(times)


def bench_ds3(n: int, alpha: float | None, repeats: int, videos: Path) -> None:
    alphas = {q: default_alpha(q) if alpha is None else alpha for q in ("inf", 2)}
    print(f"\nDS3 at n = {n} frames, lambda = alpha * lambda_max, alpha {alphas} "
          f"(torch threads {torch.get_num_threads()})")
    header = (f"{'instance':9} {'q':>3} {'cvxpy s':>8} {'admm s':>7} {'speedup':>7} "
              f"{'iters':>5} {'obj rel diff':>12} {'same keys':>9}  keys (admm)")
    print(header)
    print("-" * len(header))
    instances = {**synthetic_instances(n), **real_instances(n, videos)}
    total_ref = total_fast = 0.0
    for name, features in instances.items():
        D = normalise_dissimilarities(pairwise_distances(torch.tensor(features, dtype=torch.float32)))
        for q in ("inf", 2):
            reference, t_ref = timed(lambda: ds3_cvxpy(D.double(), q=q, alpha=alphas[q]))
            fast, t_fast = timed(lambda: ds3_admm(D, q=q, alpha=alphas[q]), repeats)
            total_ref, total_fast = total_ref + t_ref, total_fast + t_fast
            ref_keys, _ = ds3_representatives(reference.Z, D, 4)
            keys, _ = ds3_representatives(fast.Z, D, 4)
            rel = float((fast.objective - reference.objective) / reference.objective)
            same = sorted(ref_keys.tolist()) == sorted(keys.tolist())
            print(f"{name:9} {q!s:>3} {t_ref:8.2f} {t_fast:7.3f} {t_ref / t_fast:6.0f}x "
                  f"{fast.iterations:5d} {rel:12.1e} {str(same):>9}  {sorted(keys.tolist())}")
    print(f"(reference solver: {reference.solver}; cvxpy time includes problem compilation; "
          f"overall speedup {total_ref / total_fast:.0f}x)")

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"\nBatched ADMM, 16 clips x {n} frames, q = inf")
    for device in devices:
        clips = [torch.tensor(f, dtype=torch.float32, device=device)
                 for s in range(8) for f in synthetic_instances(n, seed=s).values()]
        _, seconds = timed(lambda: select_keyframes_batch(clips, alpha=alphas["inf"]), repeats)
        single = sum(timed(lambda: ds3_admm(normalise_dissimilarities(pairwise_distances(c)),
                                            alpha=alphas["inf"]))[1] for c in clips)
        print(f"  {device:4}: {seconds:6.3f} s for 16 clips ({1000 * seconds / 16:.1f} ms per clip; "
              f"one by one {1000 * single / 16:.1f} ms per clip)")


def synthetic_clip(path: Path, seconds: float = 10.0, fps: int = 24) -> Path:
    """A 640x360 H.264 clip of moving shapes over 4 'scenes' (stands in for a DCASE clip)."""
    import av

    rng = np.random.default_rng(0)
    backgrounds = rng.integers(0, 255, size=(4, 3))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.empty((360, 640, 3), np.uint8)
            frame[:] = backgrounds[min(3, i * 4 // int(seconds * fps))]
            x = (i * 7) % 560
            frame[140:220, x : x + 80] = 255 - frame[140:220, x : x + 80]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def bench_branch(video: Path | None, repeats: int) -> None:
    try:
        from avtag.video.branch import VideoBranch
    except ImportError:
        print("\n(video branch not available: avtag.video.branch.VideoBranch missing)")
        return
    from avtag.video.decode import probe

    with tempfile.TemporaryDirectory() as tmp:
        clip = video or synthetic_clip(Path(tmp) / "clip.mp4")
        info = probe(clip)
        branch = VideoBranch()
        _, load_s = timed(branch.load)
        stages = ["decode", "features", "ds3", "recognition", "mapping"]
        runs = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            prediction = branch.predict(clip)
            runs.append((time.perf_counter() - start, prediction.timings))
        print(f"\nVideo branch on {'synthetic' if video is None else clip} "
              f"({info.width}x{info.height}, {info.duration:.1f} s, {info.fps:.0f} fps), "
              f"defaults ({branch.config.recognizer}, fps={branch.config.fps}), "
              f"{torch.get_num_threads()} threads; model load {load_s:.2f} s (once)")
        print(f"{'stage':12} {'median s':>9}")
        for stage in stages:
            print(f"{stage:12} {statistics.median(t[stage] for _, t in runs):9.3f}")
        print(f"{'total wall':12} {statistics.median(w for w, _ in runs):9.3f}   "
              f"({prediction.num_frames} frames analysed, key frames "
              f"{prediction.keyframe_indices.tolist()})")


@cli_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240, help="n for the DS3 comparison")
    parser.add_argument("--alpha", type=float, default=None,
                        help="lambda = alpha * lambda_max (default: the default for each q)")
    parser.add_argument("--videos", type=Path,
                        default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos",
                        help="real clips for the DS3 table (skipped when absent)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--branch", action="store_true", help="also time the whole video branch")
    parser.add_argument("--video", type=Path, default=None, help="clip for --branch")
    parser.add_argument("--skip-ds3", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.skip_ds3:
        bench_ds3(args.frames, args.alpha, args.repeats, args.videos)
    if args.branch:
        bench_branch(args.video, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
