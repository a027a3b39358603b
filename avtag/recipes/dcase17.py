"""``avtag prepare dcase17``: pair the DCASE 2017 Task 4 lists with downloaded clips, report
what is missing, pack audio, write manifests.

    avtag prepare dcase17 --official-dir ../shared/data/dcase17 --audio-dir ~/dcase17_audio \\
        --out data/dcase17 [--sample-rate 20000] [--workers 4]

Clips are found anywhere under ``--audio-dir`` (nested folders, names with or without the
leading ``Y``, any format soundfile or PyAV reads); when a clip has several files they are
tried in order (.wav, .flac, ..., :func:`avtag.data.dcase17.find_audio_candidates`), so a
corrupt .flac never hides a good .wav. Writes into ``--out``:

* ``report.txt``: missing clips per split and per class, files that match no clip, and the
  validation split's figures on the official list and on the clips present (also printed);
* ``missing.csv``: ``split,clip_id,labels`` of every clip not found (labels joined by ``;``);
* ``failures.csv``: ``split,clip_id,path,reason`` of clips found but not decodable (skipped);
* ``unmatched.csv``: ``path,reason`` of audio files that match no clip of the lists;
* ``{split}.h5``: the decoded clips of a split, mono, resampled, int16 (:mod:`avtag.data.pack`);
* ``{split}.jsonl``: manifests of the packed clips (``pack``/``pack_key`` set), for train,
  validation (balanced, made from the present training clips:
  :mod:`avtag.data.dcase17_validation`), test and evaluation.

Reliability: decoding runs in ``--workers`` processes (:mod:`avtag.recipes.decoding`: spawned
before any pack is opened, Ctrl-C and a killed main process handled, at most ``--decode-timeout``
seconds a file). A pack is written to a temporary file and renamed into place when complete; a
split that packs no clip keeps its old pack and manifest; a stale temporary file of a killed run
is replaced. Every output goes through :mod:`avtag.atomic`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avtag.atomic import write_csv, write_text
from avtag.data.dcase17 import SPLITS, VALIDATION_SIZE, find_audio_candidates, load_dcase17, split_figures
from avtag.data.manifests import ClipRecord, write_manifest
from avtag.data.pack import PackWriter
from avtag.errors import InputFileError, cli_guard
from avtag.events import event_names
from avtag.recipes.decoding import DECODE_TIMEOUT, Decoder, add_decoding_arguments, check_decoding_arguments  # noqa: F401 - Decoder re-exported: part of this module's API
from avtag.recipes.tables import missing_clip_table

# Containers PyAV decodes that soundfile does not (common downloader outputs).
EXTRA_EXTENSIONS = ("mp3", "opus", "m4a", "mp4", "webm", "mkv", "aac")


@dataclass
class SplitReport:
    """What was found, missing and unreadable in one split."""

    total: int = 0
    missing: list[ClipRecord] = field(default_factory=list)
    failed: list[tuple[ClipRecord, str, str]] = field(default_factory=list)
    packed: list[ClipRecord] = field(default_factory=list)
    kept_previous: bool = False


@dataclass
class PrepareReport:
    """Per-split reports, the audio files that match no clip and the validation figures."""

    splits: dict[str, SplitReport]
    unmatched: list[tuple[str, str]]
    validation_official: dict[str, object]
    validation_present: dict[str, object]


def audio_extensions() -> list[str]:
    """Every file extension the audio reader can decode."""
    import soundfile

    return sorted({ext.lower() for ext in soundfile.available_formats()} | set(EXTRA_EXTENSIONS))


# ----------------------------------------------------------------------------- packing


class _NothingPacked(Exception):
    """Raised inside the pack writer to discard a pack without clips (the old one stays)."""


def _pack_split(split: str, present: list[ClipRecord], candidates: dict[str, list[str]], out_dir: Path,
                sample_rate: int, decoder: Decoder, report: SplitReport) -> None:
    pack_name = f"{split}.h5"
    stale = out_dir / f"{pack_name}.tmp"
    stale.unlink(missing_ok=True)  # a killed run's file (possibly still locked by its orphans: a new inode is free)
    jobs = [(candidates[r.id], sample_rate) for r in present]
    try:
        with PackWriter(out_dir / pack_name, sample_rate) as writer:
            for record, (samples, path, reason) in zip(present, decoder.run(jobs), strict=True):
                if samples is None:
                    report.failed.append((record, " | ".join(candidates[record.id]), reason or "unknown error"))
                    continue
                writer.add(record.id, samples)  # type: ignore[arg-type]
                record.pack, record.pack_key, record.audio = pack_name, record.id, None
                record.duration = len(samples) / sample_rate  # type: ignore[arg-type]
                report.packed.append(record)
            if not report.packed:
                raise _NothingPacked
    except _NothingPacked:
        report.kept_previous = (out_dir / pack_name).exists()
        return
    except OSError as err:  # e.g. the HDF5 lock of another running prepare
        raise InputFileError(f"cannot write the pack ({err.strerror or err}); is another prepare running?",
                             out_dir / pack_name) from None
    write_manifest(report.packed, out_dir / f"{split}.jsonl")


def prepare(
    official_dir: Path,
    audio_dir: Path,
    out_dir: Path,
    sample_rate: int = 20000,
    workers: int = 1,
    seed: int = 0,
    validation_size: int = VALIDATION_SIZE,
    splits: Sequence[str] = SPLITS,
    decode_timeout: float = DECODE_TIMEOUT,
) -> PrepareReport:
    """Find, report, pack and write manifests; returns the report."""
    if not audio_dir.is_dir():
        raise InputFileError("audio folder not found", audio_dir)
    found, unnamed = find_audio_candidates(audio_dir, audio_extensions())
    official = load_dcase17(official_dir, seed=seed, validation_size=validation_size)
    all_splits = load_dcase17(official_dir, seed=seed, validation_size=validation_size, present=set(found))
    listed = {r.id for records in official.values() for r in records}
    unmatched = [(str(p), "not a clip name") for p in unnamed]
    unmatched += [(str(p), "a clip in none of the lists") for cid, paths in found.items() if cid not in listed for p in paths]
    candidates = {cid: [str(p) for p in paths] for cid, paths in found.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    reports: dict[str, SplitReport] = {}
    decoder = Decoder(workers, decode_timeout)  # started before any pack is opened
    try:
        for split in splits:
            records = all_splits[split]
            report = reports[split] = SplitReport(total=len(records))
            present = []
            for record in records:
                (present if record.id in candidates else report.missing).append(record)
            if present:
                _pack_split(split, present, candidates, out_dir, sample_rate, decoder, report)
            else:
                report.kept_previous = (out_dir / f"{split}.h5").exists()
    finally:
        decoder.close()
    result = PrepareReport(reports, sorted(unmatched), split_figures(official["validation"]),
                           split_figures(all_splits["validation"]))
    _write_reports(out_dir, result)
    return result


def _write_reports(out_dir: Path, result: PrepareReport) -> None:
    reports = result.splits
    write_csv(out_dir / "missing.csv", ["split", "clip_id", "labels"],
              [[split, r.id, ";".join(r.labels)] for split, report in reports.items() for r in report.missing])
    write_csv(out_dir / "failures.csv", ["split", "clip_id", "path", "reason"],
              [[split, r.id, path, reason] for split, report in reports.items() for r, path, reason in report.failed])
    write_csv(out_dir / "unmatched.csv", ["path", "reason"], result.unmatched)
    write_text(out_dir / "report.txt", summary(result) + "\n")


# ----------------------------------------------------------------------------- report


def missing_table(reports: dict[str, SplitReport], classes: Sequence[str]) -> str:
    """Missing / total clips per class (rows) and split (columns) as a plain-text table."""
    per_class = {
        split: [(sum(1 for r in report.missing if name in r.labels),
                 sum(1 for r in report.missing + report.packed + [f[0] for f in report.failed] if name in r.labels))
                for name in classes]
        for split, report in reports.items()
    }
    totals = {split: (len(r.missing), r.total, len(r.failed), len(r.packed)) for split, r in reports.items()}
    return "\n".join(missing_clip_table(classes, per_class, totals))


def _figures_line(name: str, figures: dict[str, object]) -> str:
    return (
        f"validation split, {name}: {figures['clips']} clips, {figures['positives_min']}-{figures['positives_max']} "
        f"positives per class, labels per clip {figures['labels_per_clip']}, "
        f"{100 * float(figures['multi_label_share']):.1f}% multi-label"
    )


def summary(result: PrepareReport) -> str:
    """The report printed and written to ``report.txt``."""
    lines = [missing_table(result.splits, event_names()), ""]
    not_named = sum(1 for _, reason in result.unmatched if reason == "not a clip name")
    lines.append(f"audio files matching no clip: {len(result.unmatched)} ({not_named} not a clip name, "
                 f"{len(result.unmatched) - not_named} a clip in none of the lists; unmatched.csv)")
    lines.append(_figures_line("official list", result.validation_official))
    lines.append(_figures_line("clips present (used)", result.validation_present))
    for split, report in result.splits.items():
        if not report.packed:
            kept = "its previous pack and manifest are kept" if report.kept_previous else "no pack or manifest written"
            lines.append(f"{split}: no clip packed; {kept}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avtag prepare dcase17",
        description="Pair the DCASE 2017 Task 4 lists with downloaded clips, report what is missing, pack audio.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--official-dir", type=Path, required=True, help="folder with the organisers' lists and ground truth")
    parser.add_argument("--audio-dir", type=Path, required=True, help="folder (searched recursively) with downloaded clips")
    parser.add_argument("--out", type=Path, required=True, help="output folder for packs, manifests and reports")
    add_decoding_arguments(parser, 20000, "sample rate of the packed audio (Hz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balanced validation split")
    parser.add_argument("--validation-size", type=int, default=VALIDATION_SIZE,
                        help="validation positives over the 17 classes (004 §3.1: 1,142)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to pack")
    return parser


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_decoding_arguments(args)
    result = prepare(
        args.official_dir, args.audio_dir, args.out, sample_rate=args.sample_rate, workers=args.workers,
        seed=args.seed, validation_size=args.validation_size, splits=args.splits, decode_timeout=args.decode_timeout,
    )
    print(summary(result))
    failed = sum(len(r.failed) for r in result.splits.values())
    missing = sum(len(r.missing) for r in result.splits.values())
    print(f"\n{missing} clips missing (missing.csv), {failed} unreadable (failures.csv); packs and manifests in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
