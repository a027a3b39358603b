"""Benchmark the video side: DS3 ADMM vs the cvxpy reference, and the whole video branch.

    python scripts/bench_video.py                 # DS3 table at n = 240 frames (004 §3.4)
    python scripts/bench_video.py --branch        # plus the video branch on a 10 s 640x360 clip
    python scripts/bench_video.py --branch --video clip.mp4   # ... on your own clip
    python scripts/bench_video.py --skip-ds3 --startup  # recognizer import + first forward, avtag vs timm
    python scripts/bench_video.py --skip-ds3 --opencv   # frame resize / colour conversion vs opencv
    python scripts/bench_video.py --skip-ds3 --descriptions ontology.json  # event descriptions

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


STARTUP_AVTAG = """
import time, resource, numpy as np
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
from avtag.video.recognize import load_recognizer
t1 = time.perf_counter()
r = load_recognizer('efficientnet_lite0', device='cpu')
t2 = time.perf_counter()
r(np.zeros((1, 360, 640, 3), np.uint8))
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

STARTUP_TIMM = """
import time, resource, numpy as np
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
import timm
from timm.data import resolve_data_config
from torchvision.transforms import v2
from avtag.video.recognize import _load_by_position, _read_state_dict, embedded_efficientnet_weights
t1 = time.perf_counter()
m = timm.create_model('tf_efficientnet_lite0', pretrained=False).eval()
path = embedded_efficientnet_weights()
_load_by_position(m, _read_state_dict(path), path)
cfg = resolve_data_config({{}}, model=m)
pre = v2.Compose([v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                  v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                  v2.Normalize(cfg['mean'], cfg['std'])])
t2 = time.perf_counter()
with torch.inference_mode():
    m(pre(torch.zeros((1, 3, 360, 640), dtype=torch.uint8)))
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_startup(repeats: int, threads: int) -> None:
    """Fresh interpreters: imports, model build + weights, first forward on one frame."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    print(f"\nEmbedded recognizer start-up, fresh interpreter, median of {repeats} "
          f"({threads} torch threads)")
    print(f"{'path':28} {'imports s':>9} {'build s':>8} {'1st fwd s':>9} {'total s':>8} {'RSS MiB':>8}")
    for name, code in (("avtag EfficientNetLite0", STARTUP_AVTAG), ("timm tf_efficientnet_lite0", STARTUP_TIMM)):
        rows = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", code.format(threads=threads)], env=env,
                                 check=True, capture_output=True, text=True).stdout.split()
            rows.append([float(v) for v in out])
        cols = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"{name:28} {cols[0]:9.2f} {cols[1]:8.2f} {cols[2]:9.2f} {sum(cols[:3]):8.2f} "
              f"{cols[3]:8.0f}")


def bench_opencv(videos: Path, repeats: int) -> None:
    """decode.py's frame resizing and colour conversion against opencv doing the same step."""
    try:
        import cv2
    except ImportError:
        print("\n(opencv not installed: pip install opencv-python-headless)")
        return
    import av
    import decord

    from avtag.video.decode import _pick_frames, probe, resized_shape

    cv2.setNumThreads(1)
    clips = sorted(p for p in videos.glob("*") if p.suffix in (".mp4", ".mkv"))
    print(f"\nFrame resize + RGB conversion (3 fps, longer side 640), best of {repeats} s per clip")
    print(f"{'clip':24} {'size':>9} {'decord resize':>13} {'decord+cv2':>10} "
          f"{'pyav rgb24':>10} {'pyav+cv2':>9}")
    for clip in clips:
        info = probe(clip)
        width, height = resized_shape(info.width, info.height, 640)

        def picks(reader):
            stamps = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))))
            return _pick_frames(stamps[:, 0], float(stamps[-1, 1]), 3.0, None).tolist()

        def decord_resize():
            reader = decord.VideoReader(str(clip), width=width, height=height)
            return reader.get_batch(picks(reader)).asnumpy()

        def decord_cv2():
            reader = decord.VideoReader(str(clip))
            frames = reader.get_batch(picks(reader)).asnumpy()
            return [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]

        def pyav(convert):
            out = []
            with av.open(str(clip)) as container:
                for frame in container.decode(container.streams.video[0]):
                    out.append(convert(frame))
            return out

        def pyav_rgb():
            return pyav(lambda f: f.to_ndarray(format="rgb24", width=width, height=height))

        def pyav_cv2():
            def convert(f):
                yuv = f.to_ndarray(format="yuv420p")
                rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
                return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            return pyav(convert)

        times = [timed(fn, repeats)[1] for fn in (decord_resize, decord_cv2, pyav_rgb, pyav_cv2)]
        print(f"{clip.name[:24]:24} {info.width}x{info.height:<4} {times[0]:13.3f} {times[1]:10.3f} "
              f"{times[2]:10.3f} {times[3]:9.3f}")


def compare_descriptions(videos: Path, ontology: Path) -> None:
    """Top events of each shared clip with the manifest's and the ontology's descriptions."""
    from avtag.video.branch import VideoBranch, VideoBranchConfig
    from avtag.video.decode import decode_video

    manifest = VideoBranch(VideoBranchConfig())
    from_ontology = VideoBranch(VideoBranchConfig(event_descriptions="ontology",
                                                  ontology_path=str(ontology)))
    from_ontology._recognizer = manifest.recognizer
    print(f"\nTop-3 video events per clip (embedded branch, whole clip, 3 fps): hand-written "
          f"manifest vs AudioSet ontology descriptions ({ontology})")
    for clip in sorted(p for p in videos.glob("*") if p.suffix in (".mp4", ".mkv")):
        video = decode_video(clip, fps=manifest.config.fps, with_audio=False)
        recognition = manifest.recognizer(video.frames)
        for label, branch in (("manifest", manifest), ("ontology", from_ontology)):
            top = branch.predict_recognized(recognition, video.times).top_events(3)
            print(f"  {clip.name[:22]:22} {label:8} " + ", ".join(f"{n} {p:.2f}" for n, p in top))


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
    parser.add_argument("--startup", action="store_true",
                        help="recognizer import + first forward, avtag's module vs timm's")
    parser.add_argument("--opencv", action="store_true",
                        help="decode.py's frame resizing/colour conversion vs opencv")
    parser.add_argument("--descriptions", type=Path, default=None, metavar="ONTOLOGY_JSON",
                        help="compare the manifest's and this ontology's event descriptions")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.skip_ds3:
        bench_ds3(args.frames, args.alpha, args.repeats, args.videos)
    if args.branch:
        bench_branch(args.video, args.repeats)
    if args.startup:
        bench_startup(args.repeats, args.threads)
    if args.opencv:
        bench_opencv(args.videos, args.repeats)
    if args.descriptions is not None:
        compare_descriptions(args.videos, args.descriptions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
