#!/usr/bin/env python
"""Pair the DCASE 2017 Task 4 lists with downloaded clips, report what is missing, pack audio.

    python scripts/prepare_dcase17.py --official-dir ../shared/data/dcase17 \\
        --audio-dir ~/dcase17_audio --out data/dcase17 [--sample-rate 20000] [--workers 4]

Clips are found anywhere under ``--audio-dir`` (nested folders, names with or without the
leading ``Y``, any format soundfile or PyAV reads). Writes into ``--out``:

* ``report.txt``: missing clips per split and per class (also printed);
* ``missing.csv``: ``split,clip_id,labels`` of every clip not found (labels joined by ``;``);
* ``failures.csv``: ``split,clip_id,path,reason`` of files found but not decodable (skipped);
* ``{split}.h5``: the decoded clips of a split, mono, resampled, int16 (:mod:`avtag.data.pack`);
* ``{split}.jsonl``: manifests of the packed clips (``pack``/``pack_key`` set), for the splits
  train, validation (1,142 clips held out of training, 004 §3.1), test and evaluation.

A split with no clip found gets neither pack nor manifest. Decoding runs in ``--workers``
processes; writing stays in the main process.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from avtag.data.dcase17 import SPLITS, VALIDATION_SIZE, find_audio_files, load_dcase17
from avtag.data.manifests import ClipRecord, write_manifest
from avtag.data.pack import PackWriter
from avtag.errors import AvtagError, InputFileError, cli_guard
from avtag.events import event_names

# Containers PyAV decodes that soundfile does not (common downloader outputs).
EXTRA_EXTENSIONS = ("mp3", "opus", "m4a", "mp4", "webm", "mkv", "aac")


@dataclass
class SplitReport:
    """What was found, missing and unreadable in one split."""

    total: int = 0
    missing: list[ClipRecord] = field(default_factory=list)
    failed: list[tuple[ClipRecord, str, str]] = field(default_factory=list)
    packed: list[ClipRecord] = field(default_factory=list)


def audio_extensions() -> list[str]:
    """Every file extension the audio reader can decode."""
    import soundfile

    return sorted({ext.lower() for ext in soundfile.available_formats()} | set(EXTRA_EXTENSIONS))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _decode(job: tuple[str, int]) -> tuple[object, str | None]:
    """Decode one file in a worker: ``(samples, None)`` or ``(None, reason)``."""
    from avtag.audio.io import load_audio

    path, sample_rate = job
    try:
        samples, _ = load_audio(path, target_sr=sample_rate, mono=True)
    except AvtagError as err:  # the path is in its own column: keep just the problem
        text, prefix = str(err), f"{err.path}: "
        return None, text[len(prefix) :] if err.path and text.startswith(prefix) else text
    except Exception as err:  # noqa: BLE001 - a bad file must never stop the run
        return None, f"{path}: {type(err).__name__}: {err}"
    return samples, None


def _decoded(jobs: list[tuple[str, int]], workers: int) -> Iterable[tuple[object, str | None]]:
    if workers <= 1:
        yield from map(_decode, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        yield from pool.map(_decode, jobs, chunksize=4)


def missing_table(reports: dict[str, SplitReport], classes: Sequence[str]) -> str:
    """Missing / total clips per class (rows) and split (columns) as a plain-text table."""
    header = ["class"] + [f"{split} missing/total" for split in reports]
    rows = []
    for name in classes:
        row = [name]
        for report in reports.values():
            total = sum(1 for r in report.missing + report.packed + [f[0] for f in report.failed] if name in r.labels)
            missing = sum(1 for r in report.missing if name in r.labels)
            row.append(f"{missing}/{total}")
        rows.append(row)
    rows.append(["all clips"] + [f"{len(r.missing)}/{r.total}" for r in reports.values()])
    rows.append(["unreadable"] + [str(len(r.failed)) for r in reports.values()])
    rows.append(["packed"] + [str(len(r.packed)) for r in reports.values()])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def prepare(
    official_dir: Path,
    audio_dir: Path,
    out_dir: Path,
    sample_rate: int = 20000,
    workers: int = 1,
    seed: int = 0,
    validation_size: int = VALIDATION_SIZE,
    splits: Sequence[str] = SPLITS,
) -> dict[str, SplitReport]:
    """Find, report, pack and write manifests; returns the per-split report."""
    if not audio_dir.is_dir():
        raise InputFileError("audio folder not found", audio_dir)
    all_splits = load_dcase17(official_dir, seed=seed, validation_size=validation_size)
    audio_files = find_audio_files(audio_dir, audio_extensions())
    out_dir.mkdir(parents=True, exist_ok=True)
    reports: dict[str, SplitReport] = {}
    for split in splits:
        records = all_splits[split]
        report = reports[split] = SplitReport(total=len(records))
        present = []
        for record in records:
            (present if record.id in audio_files else report.missing).append(record)
        if not present:
            continue
        jobs = [(str(audio_files[r.id]), sample_rate) for r in present]
        pack_name = f"{split}.h5"
        with PackWriter(out_dir / pack_name, sample_rate) as writer:
            for record, (samples, reason) in zip(present, _decoded(jobs, workers), strict=True):
                if samples is None:
                    report.failed.append((record, str(audio_files[record.id]), reason or "unknown error"))
                    continue
                writer.add(record.id, samples)  # type: ignore[arg-type]
                record.pack, record.pack_key = pack_name, record.id
                record.audio = None
                record.duration = len(samples) / sample_rate  # type: ignore[arg-type]
                report.packed.append(record)
        if report.packed:
            write_manifest(report.packed, out_dir / f"{split}.jsonl")
        else:
            (out_dir / pack_name).unlink()

    with (out_dir / "missing.csv").open("w", newline="") as fh:
        writer_csv = csv.writer(fh)
        writer_csv.writerow(["split", "clip_id", "labels"])
        for split, report in reports.items():
            for record in report.missing:
                writer_csv.writerow([split, record.id, ";".join(record.labels)])
    with (out_dir / "failures.csv").open("w", newline="") as fh:
        writer_csv = csv.writer(fh)
        writer_csv.writerow(["split", "clip_id", "path", "reason"])
        for split, report in reports.items():
            for record, path, reason in report.failed:
                writer_csv.writerow([split, record.id, path, reason])
    (out_dir / "report.txt").write_text(missing_table(reports, event_names()) + "\n")
    return reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", type=Path, required=True, help="folder with the organisers' lists and ground truth")
    parser.add_argument("--audio-dir", type=Path, required=True, help="folder (searched recursively) with downloaded clips")
    parser.add_argument("--out", type=Path, required=True, help="output folder for packs, manifests and reports")
    parser.add_argument("--sample-rate", type=int, default=20000, help="sample rate of the packed audio (default 20000)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balanced validation split")
    parser.add_argument("--validation-size", type=int, default=VALIDATION_SIZE, help="clips held out of training")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to pack")
    return parser


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sample_rate <= 0:
        raise InputFileError(f"--sample-rate must be positive, got {args.sample_rate}")
    reports = prepare(
        args.official_dir,
        args.audio_dir,
        args.out,
        sample_rate=args.sample_rate,
        workers=args.workers,
        seed=args.seed,
        validation_size=args.validation_size,
        splits=args.splits,
    )
    print(missing_table(reports, event_names()))
    failed = sum(len(r.failed) for r in reports.values())
    missing = sum(len(r.missing) for r in reports.values())
    print(f"\n{missing} clips missing (missing.csv), {failed} unreadable (failures.csv); packs and manifests in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
