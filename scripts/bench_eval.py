"""Batch evaluation against the sum of its parts (issue 9 "Speed" item 5): prints a table.

    python scripts/bench_eval.py [--clips-dir ../shared/data/videos] [--workers 2] [--repeats 1]

Parts, each timed alone in this process: loading the models (an untrained CRNN export and the
video branch), decoding every clip in a fresh pool of ``--workers`` processes, and the models on
the decoded clips. Whole: ``avtag eval-batch`` (:func:`avtag.evaluation.cli.main`) on the same
clips into a fresh folder. Ratio = (sum of the parts) / whole; >= 0.9 is the target, above 1
means decoding overlaps the models.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips-dir", default=str(ROOT.parent / "shared" / "data" / "videos"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger
    from avtag.evaluation.branches import load_audio_tagger
    from avtag.evaluation.cli import main as eval_main
    from avtag.evaluation.decoding import decode_clip, start_workers, stop_workers
    from avtag.evaluation.loop import chunked, decode_task, run_models
    from avtag.evaluation.records import load_records
    from avtag.video.branch import VideoBranch, VideoBranchConfig

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    torch.manual_seed(0)
    export = AudioTagger(build_model("crnn"), LogMelFrontEnd.from_preset("crnn")).export(work / "crnn")
    records = load_records(None, args.clips_dir)
    rows = []
    for repeat in range(args.repeats):
        tick = time.perf_counter()
        tagger = load_audio_tagger(export, "cpu")
        branch = VideoBranch(VideoBranchConfig(device="cpu")).load()
        t_load = time.perf_counter() - tick
        print(f"load {t_load:.1f} s", file=sys.stderr, flush=True)

        tick = time.perf_counter()
        pool = start_workers(args.workers)
        tasks = [decode_task(r, tagger.frontend.sample_rate, True, {"fps": 3.0, "max_side": 640}) for r in records]
        decoded = [f.result() for f in [pool.submit(decode_clip, t) for t in tasks]] if pool else \
            [decode_clip(t) for t in tasks]
        stop_workers(pool)
        t_decode = time.perf_counter() - tick
        print(f"decode {t_decode:.1f} s", file=sys.stderr, flush=True)

        tick = time.perf_counter()
        for start in range(0, len(decoded), 16):
            run_models(decoded[start:start + 16], tagger, branch, 32)
        t_models = time.perf_counter() - tick
        print(f"models {t_models:.1f} s", file=sys.stderr, flush=True)
        del decoded

        tick = time.perf_counter()
        assert eval_main(["--clips-dir", args.clips_dir, "--out", str(work / f"out{repeat}"), "--audio-checkpoint",
                          str(export), "--workers", str(args.workers), "--quiet", "--device", "cpu"]) == 0
        t_whole = time.perf_counter() - tick
        parts = t_load + t_decode + t_models
        rows.append((repeat, t_load, t_decode, t_models, parts, t_whole, parts / t_whole))
    print(f"\nmachine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
          f"{len(records)} clips from {args.clips_dir}, {args.workers} workers")
    print("| run | load s | decode s | models s | sum of parts s | eval-batch s | parts / whole |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.2f} |".format(*row))


if __name__ == "__main__":
    main()
