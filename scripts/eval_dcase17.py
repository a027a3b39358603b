"""Batch evaluation for DCASE 2017 Task 4 subtask A: audio-only, video-only and fused
systems side by side (004 §3.5, Table 1).

    python scripts/eval_dcase17.py --manifest test.jsonl --out runs/eval_test \\
        --audio-checkpoint runs/crnn/export [--fusion fusion.json] [--workers 4] [--device cuda]
    python scripts/eval_dcase17.py --clips-dir my_videos/ --out runs/eval_mine ...

Fusion workflow: evaluate the validation split, tune the fusion on that run, then report on
the test split with the tuned file::

    python scripts/eval_dcase17.py --manifest validation.jsonl --out runs/eval_val --audio-checkpoint ...
    python -m avtag.fusion fit --eval-dir runs/eval_val --out fusion.json [--method search|rule]
    python scripts/eval_dcase17.py --manifest test.jsonl --out runs/eval_test --audio-checkpoint ... \\
        --fusion fusion.json

Writes into ``--out``:

* ``results.jsonl``   the journal: one line per clip (branch probabilities, or the reason it
                      failed), appended with flush + fsync; a rerun skips every clip in it,
                      so an interrupted run resumes where it stopped;
* ``run_info.json``   the models the journal was made with (a rerun with other models is
                      refused: use another ``--out``) and the manifest (or clips folder)
                      and splits of the latest run;
* ``predictions_{system}.txt``  the official subtask A prediction file (a row for every
                      clip, a name-only row for a clip with no tag, :func:`avtag.metrics.write_tag_file`);
* ``probabilities_{system}.csv``  the clip x event probability matrix (empty cells: the
                      branch could not run on the clip);
* ``metrics.json`` and ``per_class.csv``  micro and per-class precision/recall/F1, mAP and
                      AUC per system, when the manifest has labels;
* ``failures.csv``    clips that could not be processed, with the reason.

Systems: ``audio`` (needs ``--audio-checkpoint``), ``video`` (clips with a video file), and
``fused`` (both; 004 §2.3). Thresholds: the fusion file's (tuned on validation, 004 §3.3) or,
without one, the audio checkpoint's own, 0.5 for video, and the paper's published weights
for fusion (:meth:`avtag.fusion.FusionModel.paper_default`). The script refuses to report
on the split (or any clip) the fusion file was tuned on, and on the ``validation`` split
when the audio checkpoint's thresholds were tuned there.

Decoding runs in ``--workers`` processes (``concurrent.futures``, spawn start method); the
models run in the main process, the audio model batched over the windows of a chunk of
clips, on the GPU when ``--device cuda`` (default: when available).

Choices where the paper is silent:

* Clips are processed in fixed chunks of ``--chunk`` consecutive manifest clips; a chunk
  with any clip missing from the journal is recomputed whole and only its missing clips are
  appended. The audio batches are therefore identical in an interrupted and an
  uninterrupted run, and so are the final files (batch composition can change float
  rounding on some back-ends).
* Clips longer than the model's clip length are tagged in sliding windows and max-pooled
  over windows, exactly as ``python -m avtag.run`` does.
* A clip whose sound track is missing or silent gets no audio probabilities: the audio
  system predicts no tag for it and the fused system uses the video branch alone (and vice
  versa for a clip without video).
* A failed clip (undecodable, missing file) is listed in ``failures.csv`` and gets a
  name-only (no tag) row in the prediction files, so the scores count its labels as misses.
  A rerun does not retry failed clips unless ``--retry-failures`` is given.
* Test hook: the environment variable ``AVTAG_EVAL_KILL_AFTER=N`` makes the process
  SIGKILL itself after appending N clips (to test resumption).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import csv
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from avtag.data.manifests import ClipRecord, read_manifest, resolve
from avtag.errors import AvtagError, InputFileError, ManifestError, cli_guard
from avtag.events import event_names

JOURNAL = "results.jsonl"
RUN_INFO = "run_info.json"
SYSTEMS = ("audio", "video", "fused")
MEDIA_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".mp4", ".mkv", ".webm",
                            ".mov", ".avi", ".m4v", ".m4a"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
KILL_HOOK = "AVTAG_EVAL_KILL_AFTER"


# --------------------------------------------------------------------------- inputs


def records_from_dir(directory: Path) -> list[ClipRecord]:
    """One unlabelled record per media file in ``directory`` (id = file stem), sorted."""
    if not directory.is_dir():
        raise InputFileError("no such clips directory", directory)
    records = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES):
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        records.append(ClipRecord(id=path.stem, audio=None if is_video else str(path),
                                  video=str(path) if is_video else None))
    if not records:
        raise InputFileError("no audio or video files in the clips directory", directory)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputFileError("two media files share a name (ids are file stems)", directory)
    return records


def load_records(manifest: str | None, clips_dir: str | None) -> list[ClipRecord]:
    """Records with absolute paths, in manifest (or file-name) order."""
    if manifest is None:
        return records_from_dir(Path(clips_dir))
    path = Path(manifest)
    records = read_manifest(path)
    base = path.parent
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ManifestError("clip ids are not unique", path)
    for record in records:
        record.audio = None if record.audio is None else str(resolve(base, record.audio))
        record.video = None if record.video is None else str(resolve(base, record.video))
        record.pack = None if record.pack is None else str(resolve(base, record.pack))
        if record.audio is None and record.video is None and record.pack is None:
            raise ManifestError(f"clip {record.id} has no audio, video or pack", path)
    return records


# --------------------------------------------------------------------------- workers

_PACKS: dict[str, Any] = {}


def _worker_init() -> None:
    """One thread per worker; exit when the main process dies (no orphans after a crash)."""
    import threading

    import torch

    torch.set_num_threads(1)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def decode_clip(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: the clip's mono waveform at ``sample_rate`` and/or its sampled video frames.

    Never raises: a problem comes back as ``{"id", "error"}``.
    """
    out: dict[str, Any] = {"id": task["id"], "waveform": None, "frames": None, "times": None, "notes": [],
                           "duration": 0.0, "error": None}
    try:
        sample_rate = task["sample_rate"]
        if task["video"] is not None and task["want_video"]:
            from avtag.video.decode import decode_video

            own_track = sample_rate is not None and task["audio"] is None and task["pack"] is None
            video = decode_video(task["video"], with_audio=own_track, audio_sample_rate=sample_rate,
                                 **task["video_args"])
            out.update(frames=video.frames, times=video.times, duration=float(video.duration))
            out["notes"].extend(video.notes)
            if own_track and video.audio is not None and not video.audio_is_silent:
                out["waveform"] = video.audio
        if sample_rate is not None and task["audio"] is not None:
            from avtag.audio.io import load_audio

            out["waveform"], _ = load_audio(task["audio"], target_sr=sample_rate)
        elif sample_rate is not None and task["pack"] is not None:
            from avtag.audio.io import resample
            from avtag.data.pack import PackReader

            reader = _PACKS.setdefault(task["pack"], PackReader(task["pack"]))
            waveform, rate = reader.read(task["pack_key"] or task["id"])
            out["waveform"] = resample(np.asarray(waveform, dtype=np.float32), rate, sample_rate)
        if out["waveform"] is not None:
            out["duration"] = max(out["duration"], len(out["waveform"]) / sample_rate)
            if float(np.abs(out["waveform"]).max(initial=0.0)) < 1e-4:
                out["notes"].append("audio is silent")
                out["waveform"] = None
        if out["waveform"] is None and out["frames"] is None:
            out["error"] = "nothing to analyse (no audible audio and no video frames)"
    except AvtagError as err:
        out["error"] = str(err)
    except Exception as err:  # noqa: BLE001 - a bad clip must never stop the batch
        out["error"] = f"{type(err).__name__}: {err}"
    return out


# --------------------------------------------------------------------------- journal


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Entries by clip id; a torn last line (killed mid-write) is cut off the file."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return entries
    good_bytes = 0
    with path.open("rb") as fh:
        for raw in fh:
            try:
                entry = json.loads(raw)
                if not raw.endswith(b"\n"):
                    raise ValueError("torn line")
            except ValueError:
                break
            entries[entry["id"]] = entry
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as fh:
            fh.truncate(good_bytes)
    return entries


class Journal:
    """Append-only JSON Lines file, flushed and fsynced per clip."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = path.open("a", encoding="utf-8")
        self.appended = 0
        self.kill_after = int(os.environ.get(KILL_HOOK, "0") or 0)

    def append(self, entry: dict[str, Any]) -> None:
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.appended += 1
        if self.kill_after and self.appended >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: die like a crash would

    def close(self) -> None:
        self.handle.close()


# --------------------------------------------------------------------------- models


def audio_probs_batched(tagger, waveforms: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Clip probabilities (max over sliding windows) of several clips, windows batched."""
    import torch

    from avtag.run import DEFAULT_WINDOW_SECONDS, window_starts

    sr = tagger.frontend.sample_rate
    window = float(tagger.frontend.clip_seconds or DEFAULT_WINDOW_SECONDS)
    length = tagger.frontend.clip_samples or int(round(window * sr))
    pieces, owners = [], []
    for clip, waveform in enumerate(waveforms):
        for start in window_starts(len(waveform) / sr, window):
            begin = int(round(start * sr))
            piece = waveform[begin:begin + length]
            pieces.append(np.pad(piece, (0, length - len(piece))) if len(piece) < length else piece)
            owners.append(clip)
    probs = []
    with torch.inference_mode():
        for i in range(0, len(pieces), batch_size):
            batch = torch.from_numpy(np.stack(pieces[i:i + batch_size]).astype(np.float32)).to(tagger.device)
            probs.append(tagger(batch).clip_probs.float().cpu().numpy())
    window_probs = np.concatenate(probs) if probs else np.zeros((0, len(tagger.classes)))
    owners_arr = np.asarray(owners)
    return [window_probs[owners_arr == clip].max(axis=0) for clip in range(len(waveforms))]


def video_probs(branch, decoded: dict[str, Any]) -> np.ndarray:
    """Clip probabilities of the video branch (max over 10 s sliding windows)."""
    from avtag.run import DEFAULT_WINDOW_SECONDS, run_video_branch, window_starts

    duration = max(decoded["duration"], float(decoded["times"][-1]) if len(decoded["times"]) else 0.0)
    starts = window_starts(duration, DEFAULT_WINDOW_SECONDS)
    frames = SimpleNamespace(frames=decoded["frames"], times=decoded["times"])
    probs, _, _ = run_video_branch(branch, frames, starts, DEFAULT_WINDOW_SECONDS)
    return probs.max(axis=0)


# --------------------------------------------------------------------------- outputs


def _vector(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def system_outputs(records: Sequence[ClipRecord], entries: dict[str, dict[str, Any]], systems: Sequence[str],
                   fusion) -> dict[str, dict[str, Any]]:
    """Per system: probabilities (N, C) with NaN rows where it could not run, and tags per clip."""
    classes = event_names()
    out = {}
    for system in systems:
        probs = np.full((len(records), len(classes)), np.nan)
        tags: dict[str, list[str]] = {}
        for i, record in enumerate(records):
            entry = entries.get(record.id, {})
            audio = None if entry.get("audio") is None else np.asarray(entry["audio"])
            video = None if entry.get("video") is None else np.asarray(entry["video"])
            if system == "audio":
                video = None
            elif system == "video":
                audio = None
            tags[record.id] = []
            if entry.get("status") != "ok" or (audio is None and video is None):
                continue
            probs[i] = fusion.fuse(audio, video)
            decided = probs[i] >= fusion.thresholds_for(audio is not None, video is not None)
            tags[record.id] = [classes[c] for c in np.flatnonzero(decided)]
        out[system] = {"probs": probs, "tags": tags}
    return out


def write_outputs(out_dir: Path, records: Sequence[ClipRecord], entries: dict[str, dict[str, Any]],
                  systems: Sequence[str], fusion) -> dict[str, Any]:
    """Prediction files, probability matrices, failures, and metrics when labelled."""
    from avtag.metrics import ranking_scores, score_tagging, write_tag_file

    classes = event_names()
    outputs = system_outputs(records, entries, systems, fusion)
    times = {r.id: (float(r.start or 0.0), float(r.end if r.end is not None else (r.start or 0.0) + (r.duration or 10.0)))
             for r in records}
    for system, data in outputs.items():
        write_tag_file(out_dir / f"predictions_{system}.txt", data["tags"], times=times)
        with (out_dir / f"probabilities_{system}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *classes])
            for record, row in zip(records, data["probs"], strict=True):
                writer.writerow([record.id, *("" if np.isnan(p) else f"{p:.6f}" for p in row)])
    failed = [(r, entries[r.id]) for r in records if entries.get(r.id, {}).get("status") == "failed"]
    with (out_dir / "failures.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "reason"])
        for record, entry in failed:
            writer.writerow([record.id, record.video or record.audio or record.pack, entry["reason"]])
    labelled = any(r.labels for r in records)
    metrics: dict[str, Any] = {"num_clips": len(records), "num_failed": len(failed), "labelled": labelled,
                               "systems": {}}
    if labelled:
        truth = {r.id: list(r.labels) for r in records}
        targets = np.array([[name in r.labels for name in classes] for r in records])
        for system, data in outputs.items():
            scores = score_tagging(truth, data["tags"], classes=classes)
            scored = ~np.isnan(data["probs"]).any(axis=1)
            ranking = ranking_scores(targets[scored], data["probs"][scored], classes) if scored.any() else None
            metrics["systems"][system] = {
                "precision": scores.precision, "recall": scores.recall, "f1": scores.f1,
                "macro_f1": scores.macro_f1(),
                "mAP": None if ranking is None else ranking.mean_average_precision,
                "mean_auc": None if ranking is None else ranking.mean_auc,
                "clips_with_probabilities": int(scored.sum()),
                "class_wise": {name: {"precision": s.precision, "recall": s.recall, "f1": s.f1,
                                      "tp": s.tp, "fp": s.fp, "fn": s.fn}
                               for name, s in scores.class_wise.items()},
            }
        with (out_dir / "per_class.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["event", *(f"{s}_{m}" for s in outputs for m in ("precision", "recall", "f1"))])
            for name in [*classes, "micro"]:
                row = [name]
                for system in outputs:
                    m = metrics["systems"][system]
                    source = m if name == "micro" else m["class_wise"][name]
                    row += [f"{source['precision']:.4f}", f"{source['recall']:.4f}", f"{source['f1']:.4f}"]
                writer.writerow(row)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=True) + "\n")
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """Per-class F1 of every system, then micro P/R/F1 (percent)."""
    systems = list(metrics["systems"])
    if not systems:
        return f"{metrics['num_clips']} clips ({metrics['num_failed']} failed); no labels: no scores"
    width = max(len(n) for n in event_names())
    lines = [f"{'F1 (%)':<{width}}  " + "  ".join(f"{s:>6}" for s in systems)]
    for name in event_names():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{100 * metrics['systems'][s]['class_wise'][name]['f1']:6.1f}"
                                                     for s in systems))
    for key in ("precision", "recall", "f1"):
        lines.append(f"{'micro ' + key:<{width}}  " + "  ".join(f"{100 * metrics['systems'][s][key]:6.1f}"
                                                              for s in systems))
    lines.append(f"{metrics['num_clips']} clips, {metrics['num_failed']} failed")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="DCASE 2017 Task 4 subtask A evaluation: audio, video and fused.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="JSONL manifest (avtag.data.manifests) of the clips to score")
    source.add_argument("--clips-dir", help="a folder of audio/video files (unlabelled: predictions only)")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--audio-checkpoint", help="exported AudioTagger directory or training .ckpt")
    parser.add_argument("--fusion", help="fusion JSON (avtag.fusion), tuned on another split")
    parser.add_argument("--no-video", action="store_true", help="skip the video branch")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--chunk", type=int, default=16, help="clips per processing chunk")
    parser.add_argument("--batch-size", type=int, default=32, help="audio windows per forward pass")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--retry-failures", action="store_true", help="retry clips that failed in an earlier run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _chunks(items: Sequence[ClipRecord], size: int) -> Iterable[list[ClipRecord]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _fusion_source_mismatches(fusion, models: dict[str, Any]) -> list[str]:
    """Differences between the models a fusion file was tuned with and the models of this run."""
    warnings = []
    tuned = (fusion.sources.get("audio") or {}).get("weights_sha256")
    used = (models.get("audio") or {}).get("weights_sha256")
    if tuned and used and tuned != used:
        warnings.append("the fusion file was tuned with another audio model (weights hash differs)")
    def setup(config: dict[str, Any] | None) -> dict[str, Any]:  # where it runs does not change the outputs
        return {k: v for k, v in (config or {}).items() if k not in ("device", "batch_size")}

    tuned_video, used_video = fusion.sources.get("video"), models.get("video")
    if tuned_video and used_video and setup(tuned_video) != setup(json.loads(json.dumps(used_video))):
        warnings.append("the fusion file was tuned with another video branch configuration")
    return warnings


def _tuned_split_of_tagger(tagger) -> str | None:
    text = str(tagger.metadata.get("thresholds", "")) if tagger is not None else ""
    return "validation" if "validation" in text else None


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 0 or args.chunk < 1 or args.batch_size < 1:
        raise AvtagError("--workers must be >= 0, --chunk and --batch-size >= 1")
    records = load_records(args.manifest, args.clips_dir)
    from avtag.fusion import FusionModel, describe_audio_tagger, describe_video_config
    from avtag.run import DEFAULT_VIDEO_THRESHOLD, load_audio_tagger, resolve_device

    fusion = FusionModel.load(args.fusion) if args.fusion else None
    splits = sorted({r.split for r in records if r.split})
    ids = [r.id for r in records]
    if fusion is not None:
        for split in splits or [None]:
            fusion.check_reportable(split, ids)
    device = resolve_device(args.device)
    tagger = load_audio_tagger(args.audio_checkpoint, device) if args.audio_checkpoint else None
    if tagger is not None and fusion is None and _tuned_split_of_tagger(tagger) in splits:
        raise AvtagError("the audio checkpoint's thresholds were tuned on the validation split; report on another split")
    branch = None
    if not args.no_video and any(r.video for r in records):
        from avtag.video.branch import VideoBranch, VideoBranchConfig

        branch = VideoBranch(VideoBranchConfig(device=device))
    systems = [s for s, on in (("audio", tagger is not None), ("video", branch is not None),
                               ("fused", tagger is not None and branch is not None)) if on]
    if not systems:
        raise AvtagError("nothing to run: give --audio-checkpoint, or clips with video")
    models = {"audio": None if tagger is None else describe_audio_tagger(tagger, args.audio_checkpoint),
              "video": None if branch is None else describe_video_config(branch.config)}
    if fusion is not None:
        for warning in _fusion_source_mismatches(fusion, models):
            print(f"warning: {warning}", file=sys.stderr)
    if fusion is None:
        audio_t = tagger.thresholds if tagger is not None else [0.5] * len(event_names())
        fusion = FusionModel.paper_default(audio_t, [DEFAULT_VIDEO_THRESHOLD] * len(event_names()), sources=models)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info_path = out_dir / RUN_INFO
    info = {"models": models, "systems": systems,
            "manifest": None if args.manifest is None else str(Path(args.manifest).resolve()),
            "clips_dir": None if args.clips_dir is None else str(Path(args.clips_dir).resolve()),
            "splits": splits}
    if info_path.exists():
        try:
            previous = json.loads(info_path.read_text())
        except (OSError, ValueError):
            raise InputFileError("unreadable run information; use another --out", info_path) from None
        same = json.loads(json.dumps({"models": models, "systems": systems}))
        if {k: previous.get(k) for k in same} != same:
            raise AvtagError(f"{out_dir} holds results of other models or systems; use another --out")
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    journal_path = out_dir / JOURNAL
    entries = read_journal(journal_path)
    if args.retry_failures:
        entries = {k: v for k, v in entries.items() if v.get("status") != "failed"}
    todo_chunks = [c for c in _chunks(records, args.chunk) if any(r.id not in entries for r in c)]
    started = time.perf_counter()
    processed = _process(todo_chunks, entries, journal_path, tagger, branch, args)
    elapsed = time.perf_counter() - started

    metrics = write_outputs(out_dir, records, entries, systems, fusion)
    print(format_metrics(metrics))
    if processed:
        print(f"processed {processed} clips in {elapsed:.1f} s ({processed / max(elapsed, 1e-9):.2f} clips/s)",
              file=sys.stderr)
    return 0


def _process(chunks: list[list[ClipRecord]], entries: dict[str, dict[str, Any]], journal_path: Path, tagger,
             branch, args) -> int:
    """Decode chunks in worker processes (one chunk ahead), run the models, journal new clips."""
    from tqdm import tqdm

    from avtag.run import video_decode_args

    if not chunks:
        return 0
    if branch is not None:
        branch.load()
    video_args = video_decode_args(branch) if branch is not None else {}
    sample_rate = tagger.frontend.sample_rate if tagger is not None else None

    def task(record: ClipRecord) -> dict[str, Any]:
        return {"id": record.id, "audio": record.audio, "video": record.video, "pack": record.pack,
                "pack_key": record.pack_key, "sample_rate": sample_rate, "want_video": branch is not None,
                "video_args": video_args}

    journal = Journal(journal_path)
    total = sum(len(c) for c in chunks)
    bar = tqdm(total=total, unit="clip", file=sys.stderr, disable=args.quiet or total < 2, desc="clips")
    executor = None
    if args.workers > 0:
        executor = futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_worker_init)

    def submit(chunk: list[ClipRecord]):
        if executor is None:
            return [decode_clip(task(r)) for r in chunk]
        return [executor.submit(decode_clip, task(r)) for r in chunk]

    processed = 0
    try:
        pending = submit(chunks[0])
        for index, chunk in enumerate(chunks):
            current = pending
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else None
            decoded = [item.result() if isinstance(item, futures.Future) else item for item in current]
            results = _run_models(decoded, tagger, branch, args.batch_size)
            for record, entry in zip(chunk, results, strict=True):
                if record.id not in entries:
                    entries[record.id] = entry
                    journal.append(entry)
                    processed += 1
                bar.update(1)
    finally:
        bar.close()
        journal.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return processed


def _run_models(decoded: list[dict[str, Any]], tagger, branch, batch_size: int) -> list[dict[str, Any]]:
    """Journal entries for one decoded chunk (model errors fail the clip, not the batch)."""
    entries = [
        {"id": d["id"], "status": "failed", "reason": d["error"]} if d["error"] else
        {"id": d["id"], "status": "ok", "audio": None, "video": None, "duration": d["duration"], "notes": d["notes"]}
        for d in decoded
    ]
    audible = [i for i, d in enumerate(decoded) if not d["error"] and d["waveform"] is not None]
    if tagger is not None and audible:
        for i, probs in zip(audible, audio_probs_batched(tagger, [decoded[i]["waveform"] for i in audible], batch_size),
                            strict=True):
            entries[i]["audio"] = _vector(probs)
    if branch is not None:
        for i, d in enumerate(decoded):
            if d["error"] or d["frames"] is None:
                continue
            try:
                entries[i]["video"] = _vector(video_probs(branch, d))
            except Exception as err:  # noqa: BLE001 - a bad clip must never stop the batch
                entries[i] = {"id": d["id"], "status": "failed", "reason": f"video branch: {type(err).__name__}: {err}"}
    return entries


if __name__ == "__main__":
    sys.exit(main())
