"""``avtag eval-batch`` (= ``scripts/eval_dcase17.py``): resumable batch evaluation of the
audio-only, video-only and fused systems side by side (004 §3.5, Table 1).

Outputs in ``--out``: ``results.jsonl`` (the crash-safe journal), ``run_info.json``,
``predictions_{system}.txt``, ``probabilities_{system}.csv``, ``failures.csv``, and with labels
``metrics.json`` and ``per_class.csv`` (see :func:`build_parser`'s epilog).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import AvtagError, InputFileError, cli_guard, interrupts_are_final
from avtag.evaluation.scoring import DEFAULT_VIDEO_THRESHOLD, System

RUN_INFO = "run_info.json"
STALE_JOURNAL = "results.replaced.jsonl"

EPILOG = """\
Inputs: --manifest (JSONL, avtag.data.manifests; labelled clips are scored) or --clips-dir
(folder mode: every audio/video file directly inside the folder is one unlabelled clip, id = file
stem; predictions only). Systems: audio (--audio-checkpoint, any class list: scored on its own
classes), video (clips with a video file: the video branch's event list, the 17 DCASE 2017
events or --video-events FILE, e.g. the model's own classes), fused (both: the classes they
share; a clip without sound is scored by the video branch alone). Thresholds:
audio the checkpoint's, video 0.5 (untuned), fused the --fusion file's or, without one, the
paper-default weights of 004 section 3.4 with interpolated, untuned thresholds (the output says so).

Writes into --out: results.jsonl (journal, one line per clip; a rerun resumes and re-evaluates
clips whose files or settings changed), run_info.json, predictions_{system}.txt (DCASE 2017
subtask A format, one clip-name spelling per file), probabilities_{system}.csv (the model's
class names as columns), failures.csv, and with labels metrics.json and per_class.csv (with
the label-prior and all-positive baselines). Every file is written atomically.

Workflow: evaluate validation, tune fusion there, report the test split:
  avtag eval-batch --manifest validation.jsonl --out runs/eval_val --audio-checkpoint exports/crnn
  avtag fusion fit --eval-dir runs/eval_val --out fusion.json
  avtag eval-batch --manifest test.jsonl --out runs/eval_test --audio-checkpoint exports/crnn --fusion fusion.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avtag eval-batch", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Resumable batch evaluation (DCASE 2017 Task 4 subtask A): audio, video and fused systems.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="JSONL manifest of the clips to score")
    source.add_argument("--clips-dir", help="a folder of audio/video files (unlabelled: predictions only)")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--audio-checkpoint", help="exported AudioTagger directory or training .ckpt")
    parser.add_argument("--video-config", metavar="FILE",
                        help="video-branch YAML config (e.g. configs/video/paper.yaml; default: embedded models)")
    parser.add_argument("--video-events", metavar="FILE",
                        help="the events the video branch maps objects to: a CSV 'name,description' (e.g. the "
                             "events.csv of avtag prepare soundscapes); default: the 17 DCASE 2017 events")
    parser.add_argument("--fusion", help="fusion JSON (avtag fusion fit), tuned on other clips")
    parser.add_argument("--no-video", action="store_true", help="skip the video branch")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="decoding processes (0: decode in this process; default: min(4, CPUs))")
    parser.add_argument("--chunk", type=int, default=16, help="clips per processing chunk (default 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="audio windows per forward pass (default 32)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    parser.add_argument("--retry-failures", action="store_true", help="retry clips that failed in an earlier run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _fusion_source_mismatches(fusion, models: dict[str, Any]) -> list[str]:
    """Differences between the models a fusion file was tuned with and the models of this run."""
    from avtag.evaluation.identity import journal_identity

    warnings = []
    tuned = (fusion.sources.get("audio") or {}).get("weights_sha256")
    used = (models.get("audio") or {}).get("weights_sha256")
    if tuned and used and tuned != used:
        warnings.append("the fusion file was tuned with another audio model (weights hash differs)")
    tuned_video = journal_identity({"video": fusion.sources.get("video")})["video"]
    used_video = journal_identity(models)["video"]
    if tuned_video and used_video and tuned_video != used_video:
        warnings.append("the fusion file was tuned with another video branch configuration")
    return warnings


def _branch_system(branch: str, names: list[str], thresholds: Any, source: str, fusion: Any, fusion_given: bool) -> System:
    """One branch's system: its own thresholds, replaced on the fused classes by the fusion
    file's thresholds for that branch when a fusion file is given."""
    thresholds = np.array(thresholds, dtype=np.float64)
    if fusion_given:
        fused_index = {c: i for i, c in enumerate(fusion.classes)}
        tuned = fusion.audio_thresholds if branch == "audio" else fusion.video_thresholds
        for c, name in enumerate(names):
            if name in fused_index:
                thresholds[c] = tuned[fused_index[name]]
        source += f", the fusion file's {branch} thresholds on the fused classes"
    return System(branch, names, thresholds, source)


def _systems(tagger, branch_classes: dict[str, list[str]], fusion, fusion_given: bool) -> list[System]:
    systems = []
    if "audio" in branch_classes:
        systems.append(_branch_system("audio", branch_classes["audio"], tagger.thresholds, "the audio checkpoint's",
                                      fusion, fusion_given))
    if "video" in branch_classes:
        names = branch_classes["video"]
        systems.append(_branch_system("video", names, np.full(len(names), DEFAULT_VIDEO_THRESHOLD),
                                      f"untuned {DEFAULT_VIDEO_THRESHOLD}", fusion, fusion_given))
    if fusion is not None:
        systems.append(System("fused", list(fusion.classes), fusion.thresholds,
                              f"fusion ({fusion.method})" + (" file" if fusion_given else ", untuned")))
    return systems


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``avtag eval-batch``."""
    from avtag.atomic import check_writable, write_json
    from avtag.device import resolve_device
    from avtag.evaluation.branches import load_audio_tagger, video_classes
    from avtag.evaluation.decoding import start_workers, stop_workers
    from avtag.evaluation.identity import (
        check_threshold_source,
        clip_source,
        file_sha256,
        identity_differences,
        journal_identity,
    )
    from avtag.evaluation.journal import JOURNAL, read_journal
    from avtag.evaluation.loop import chunked, decode_task, process
    from avtag.evaluation.outputs import write_outputs
    from avtag.evaluation.records import load_records
    from avtag.validate import read_json

    args = build_parser().parse_args(argv)
    if args.workers < 0 or args.chunk < 1 or args.batch_size < 1:
        raise AvtagError("--workers must be >= 0, --chunk and --batch-size >= 1")
    records = load_records(args.manifest, args.clips_dir)
    from avtag.fusion import FusionModel, describe_audio_tagger, describe_video_config

    fusion_file = None
    if args.fusion:  # refuse the tuning clips before any model loads
        fusion_file = FusionModel.read(args.fusion)
        fusion_file.check_reportable(_single_split(records), [r.id for r in records])
    video_events = None
    if args.video_events:  # a bad event file costs nothing either
        from avtag.events import read_event_file

        video_events = read_event_file(args.video_events)
    out_dir = Path(args.out)
    check_writable(out_dir / RUN_INFO)
    video_config = None
    want_video = not args.no_video and any(r.video for r in records)
    if want_video:
        from avtag.video.branch import VideoBranchConfig
        from avtag.video.config import load_video_config

        video_config = load_video_config(args.video_config) if args.video_config else VideoBranchConfig()
    video_args = {k: getattr(video_config, k) for k in ("fps", "max_side")} if video_config is not None else {}
    device = resolve_device(args.device)
    if video_config is not None:
        video_config.device = str(device)

    # The decode workers start (spawn, imports) while the models load; decoding then runs chunks ahead.
    executor = start_workers(args.workers)
    try:
        tagger = load_audio_tagger(args.audio_checkpoint, device) if args.audio_checkpoint else None
        sample_rate = tagger.frontend.sample_rate if tagger is not None else None
        threshold_note = check_threshold_source(tagger, records) if tagger is not None else None
        branch = None
        if video_config is not None:
            from avtag.video.branch import VideoBranch

            branch = VideoBranch(video_config, events=video_events).load()
        if tagger is None and branch is None:
            raise AvtagError("nothing to run: give --audio-checkpoint, or clips with video")
        branch_classes: dict[str, list[str]] = {}
        if tagger is not None:
            branch_classes["audio"] = list(tagger.classes)
        if branch is not None:
            branch_classes["video"] = video_classes(branch)
        models = {"audio": None if tagger is None else describe_audio_tagger(tagger, args.audio_checkpoint),
                  "video": None if branch is None else describe_video_config(branch.config)}
        if branch is not None and video_events is not None:  # part of the journal identity
            models["video"]["events"] = [[e.name, e.description] for e in branch.events]
        fusion = None
        notes: list[str] = []
        if tagger is not None and branch is not None:
            video_set = set(branch_classes["video"])
            shared = [c for c in branch_classes["audio"] if c in video_set]
            if not shared:
                notes.append("the audio model shares no class with the video branch's events: no fused system")
            elif fusion_file is not None:
                fusion = fusion_file
                fusion.check_classes(shared, args.fusion)
                for warning in _fusion_source_mismatches(fusion, models):
                    print(f"warning: {warning}", file=sys.stderr)
            else:
                a_index = {c: i for i, c in enumerate(branch_classes["audio"])}
                fusion = FusionModel.paper_default([tagger.thresholds[a_index[c]] for c in shared],
                                                   [DEFAULT_VIDEO_THRESHOLD] * len(shared), classes=shared,
                                                   sources=models)
                notes.append(fusion.note)
        elif args.fusion:
            notes.append("--fusion ignored: fusion needs both the audio and the video branch")
        systems = _systems(tagger, branch_classes, fusion, bool(args.fusion) and fusion is not None)

        identity = journal_identity(models)
        info_path = out_dir / RUN_INFO
        journal_path = out_dir / JOURNAL
        if info_path.exists():
            previous = read_json(info_path, "the run information of avtag eval-batch")
            changed = identity_differences(previous.get("identity") if isinstance(previous, dict) else None,
                                           identity)
            if changed and journal_path.exists():
                print(f"warning: {out_dir} holds results made with other settings ({'; '.join(changed)}); "
                      f"re-evaluating every clip (the old journal is kept as {STALE_JOURNAL})", file=sys.stderr)
                os.replace(journal_path, out_dir / STALE_JOURNAL)
        elif journal_path.exists():
            raise InputFileError(f"a journal without {RUN_INFO}: use another --out", journal_path)
        info = {"identity": identity, "models": models, "classes": {**branch_classes,
                                                                     "fused": None if fusion is None else fusion.classes},
                "systems": [s.name for s in systems],
                "thresholds": {s.name: s.threshold_source for s in systems},
                "threshold_source_check": threshold_note,
                "fusion": None if fusion is None else {
                    "method": fusion.method, "file": None if not args.fusion else str(Path(args.fusion).resolve()),
                    "sha256": None if not args.fusion else file_sha256(args.fusion), "note": fusion.note},
                "manifest": None if args.manifest is None else str(Path(args.manifest).resolve()),
                "clips_dir": None if args.clips_dir is None else str(Path(args.clips_dir).resolve()),
                "splits": sorted({r.split for r in records if r.split}), "notes": notes}
        write_json(info_path, info, indent=1)
        entries = read_journal(journal_path)
        stale = [r.id for r in records if r.id in entries and entries[r.id].get("source") != clip_source(r)]
        if stale:
            print(f"note: {len(stale)} clips changed on disk since they were evaluated (first: {stale[0]}); "
                  "re-evaluating them", file=sys.stderr)
        valid = {r.id: entries[r.id] for r in records if r.id in entries and r.id not in stale
                 and not (args.retry_failures and entries[r.id].get("status") == "failed")}
        todo = [c for c in chunked(records, args.chunk) if any(r.id not in valid for r in c)]

        def make_task(record):
            return decode_task(record, sample_rate, branch is not None, video_args)

        started = time.perf_counter()
        with interrupts_are_final():  # a Ctrl-C swallowed anywhere in the loop still ends the run: exit 130
            processed = process(todo, valid, journal_path, tagger, branch, executor, make_task, args.batch_size,
                                progress=not args.quiet)
        executor = None
        elapsed = time.perf_counter() - started
    finally:
        stop_workers(executor, terminate=True)
    from avtag.evaluation.scoring import format_metrics

    metrics, warnings = write_outputs(out_dir, records, valid, systems, branch_classes, fusion)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in notes:
        print(f"note: {line}")
    if threshold_note:
        print(f"note: audio thresholds: {threshold_note}")
    print(format_metrics(metrics))
    if processed:
        print(f"processed {processed} clips in {elapsed:.1f} s ({processed / max(elapsed, 1e-9):.2f} clips/s)",
              file=sys.stderr)
    return 0


def _single_split(records) -> str | None:
    splits = sorted({r.split for r in records if r.split})
    return splits[0] if len(splits) == 1 else None
