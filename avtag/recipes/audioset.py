"""``avtag prepare audioset``: AudioSet segment lists + downloaded clips -> packs, shards, manifests.

    avtag prepare audioset --lists-dir ../shared/data/audioset --audio-dir ~/audioset_audio \\
        --out data/audioset [--splits balanced_train eval] [--sample-rate 32000] [--workers 8]

Segment lists: :mod:`avtag.recipes.audioset_lists` (both layouts, header counts checked,
unknown MIDs counted per split and listed in ``unknown_mids.csv``, never dropped silently).

Clips are paired by name, found anywhere under ``--audio-dir``: ``YTID_start_end.ext`` with
or without a leading ``Y``, times as ``30.000``, ``030.000`` (``%06.3f``) or ``30``, any
extension the audio reader decodes (``.wav``, ``.flac``, ``.m4a``, ``.ogg``, ``.mp3`` ...).
Writes into ``--out``:

* ``report.txt``: parse time and segment counts per list, found/missing per split, missing
  per class and split (also printed);
* ``missing.csv`` (``split,clip_id,mids``), ``unknown_mids.csv`` (``split,clip_id,mid``),
  ``failures.csv`` (``split,clip_id,path,reason``: found but not decodable, skipped);
* ``{split}.h5``: the decoded clips, mono, at ``--sample-rate``, int16 (:mod:`avtag.data.pack`);
* ``{split}.shards/``: the same clips as litdata chunks for streaming (:mod:`avtag.data.streaming`;
  ``--no-shards`` skips them);
* ``{split}.jsonl``: manifests of the packed clips, labels as display names;
  ``full_train.jsonl``: balanced + unbalanced training clips (AudioSet-2M) when both are packed;
  ``class_labels_indices.csv``: a copy of the class list the configs name.

Every written manifest is validated at the end (ids unique, labels in the class list, every
clip in its pack at the stated rate and length, shards holding the same rows); a failure is
a one-line error.

Settings: 32 kHz is the rate of the PANNs-style models (003 §3.1 over PANNs backbones, whose
front-end is the "cnn" preset); clips are cropped to their segment's length (10 s) when a
download is longer (our documented choice); decoding runs in ``--workers`` processes
(:mod:`avtag.recipes.decoding`: a clip's files tried in order, at most ``--decode-timeout`` s a file).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.atomic import atomic_write, write_csv, write_text
from avtag.data.dcase17 import YOUTUBE_ID_LENGTH, clip_id, find_audio_candidates, parse_clip_id  # noqa: F401 - re-exported
from avtag.data.embeddings import read_class_labels
from avtag.data.manifests import ClipRecord, iter_manifest, write_manifest
from avtag.errors import InputFileError, ManifestError, cli_guard
from avtag.recipes.audioset_lists import LIST_FILES, SegmentList, read_segments  # noqa: F401 - re-exported
from avtag.recipes.decoding import DECODE_TIMEOUT, Decoder, add_decoding_arguments, check_decoding_arguments
from avtag.recipes.tables import missing_clip_table

CLASS_LABELS_FILE = "class_labels_indices.csv"
TRAINING_SPLITS = ("balanced_train", "unbalanced_train")
clip_key = clip_id  # the canonical clip id Y{youtube_id}_{start:.3f}_{end:.3f}, the name of earlier releases
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".mkv", ".aif", ".aiff"}
)


# ----------------------------------------------------------------------------- pairing with clips


def clip_name_key(name: str) -> str | None:
    """Canonical clip id of a downloaded file's name, or None when it is not a clip name
    (:func:`avtag.data.dcase17.parse_clip_id`, after cutting any audio extension).

    ``-5QrBL6MzLg_60.000_70.000.flac``, ``Y-5QrBL6MzLg_060.000_070.000.wav`` and
    ``-5QrBL6MzLg_60_70.m4a`` all give ``Y-5QrBL6MzLg_60.000_70.000``.
    """
    stem, extension = os.path.splitext(os.path.basename(name))
    parsed = parse_clip_id(stem if extension.lower() in AUDIO_EXTENSIONS else stem + extension)
    return clip_id(*parsed) if parsed is not None else None


def find_clips(audio_dir: str | Path) -> tuple[dict[str, list[Path]], int]:
    """``(clip id -> its files, most preferred first; duplicates)`` for every audio file under
    ``audio_dir`` (:func:`avtag.data.dcase17.find_audio_candidates`); ``duplicates`` counts the
    files beyond a clip's first, which are tried only when the first does not decode."""
    found, _ = find_audio_candidates(audio_dir, AUDIO_EXTENSIONS)
    return found, sum(len(paths) - 1 for paths in found.values())


# ----------------------------------------------------------------------------- packing


@dataclass
class SplitResult:
    """What one split came to."""

    segments: SegmentList
    missing: list[int] = field(default_factory=list)  # rows of segments
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (row, path, reason)
    packed: list[int] = field(default_factory=list)


def _record(segments: SegmentList, row: int, names: Sequence[str], split: str, pack: str | None) -> ClipRecord:
    key = segments.keys[row]
    start, end = segments.starts[row], segments.ends[row]
    return ClipRecord(
        id=key, labels=[names[c] for c in segments.columns[row]], pack=pack, pack_key=key if pack else None,
        start=start, end=end, duration=end - start, split=split,
    )


def pack_split(
    split: str, result: SplitResult, clips: dict[str, list[Path]], out_dir: Path, names: Sequence[str],
    sample_rate: int, decoder: Decoder, shards: bool,
) -> None:
    """Decode the found clips of a split into ``{split}.h5`` (+ shards) and write its manifest;
    each clip is cropped to its segment's length."""
    from avtag.data.pack import PackWriter

    segments = result.segments
    present = [row for row, key in enumerate(segments.keys) if key in clips]
    present_set = set(present)
    result.missing = [row for row in range(len(segments)) if row not in present_set]
    if not present:
        return
    pack_name = f"{split}.h5"
    candidates = {segments.keys[r]: [str(path) for path in clips[segments.keys[r]]] for r in present}
    jobs = [(candidates[segments.keys[r]], sample_rate, segments.ends[r] - segments.starts[r]) for r in present]
    records = []
    with PackWriter(out_dir / pack_name, sample_rate) as writer:
        for row, (samples, _, reason) in zip(present, decoder.run(jobs), strict=True):
            if samples is None:
                result.failed.append((row, " | ".join(candidates[segments.keys[row]]), reason or "unknown error"))
                continue
            writer.add(segments.keys[row], samples)
            record = _record(segments, row, names, split, pack_name)
            record.duration = len(samples) / sample_rate
            records.append(record)
            result.packed.append(row)
    if not records:
        (out_dir / pack_name).unlink()
        return
    write_manifest(records, out_dir / f"{split}.jsonl")
    if shards:
        from avtag.data.streaming import write_shards

        write_shards(out_dir / pack_name, records, out_dir / f"{split}.shards", workers=max(1, decoder.workers))


# ----------------------------------------------------------------------------- report and validation


def report_table(results: dict[str, SplitResult], names: Sequence[str], audio: bool) -> str:
    """Per-list counts, then missing/total per class and split (counted with bincount)."""
    lines = []
    for split, result in results.items():
        s = result.segments
        lines.append(
            f"{split}: {len(s)} segments, {s.num_labels} labels, {len(s.unknown)} unknown MIDs "
            f"({len({m for _, m in s.unknown})} distinct), parsed in {s.seconds:.2f} s ({s.path})"
        )
    if not audio:
        return "\n".join(lines)
    per_class, totals = {}, {}
    for split, result in results.items():
        columns = result.segments.columns
        total = np.bincount([c for cols in columns for c in cols], minlength=len(names))
        missing = np.bincount([c for row in result.missing for c in columns[row]], minlength=len(names))
        per_class[split] = list(zip(missing.tolist(), total.tolist()))
        totals[split] = (len(result.missing), len(result.segments), len(result.failed), len(result.packed))
    return "\n".join(lines + [""] + missing_clip_table(names, per_class, totals))


def validate_prepared(out_dir: str | Path, splits: Iterable[str], classes: Sequence[str], sample_rate: int) -> dict[str, int]:
    """Check every written manifest against its pack and shards; returns clips per split."""
    from avtag.data.pack import PackReader

    out_dir = Path(out_dir)
    known = set(classes)
    sizes: dict[str, int] = {}
    for split in splits:
        manifest = out_dir / f"{split}.jsonl"
        if not manifest.is_file():
            continue
        ids: set[str] = set()
        with PackReader(out_dir / f"{split}.h5") as pack:
            if pack.sample_rate != sample_rate:
                raise ManifestError(f"pack is {pack.sample_rate} Hz, expected {sample_rate}", pack.path)
            for count, record in enumerate(iter_manifest(manifest), 1):
                if record.id in ids:
                    raise ManifestError(f"line {count}: clip {record.id} appears twice", manifest)
                ids.add(record.id)
                if unknown := [name for name in record.labels if name not in known]:
                    raise ManifestError(f"line {count}: labels {unknown} are not AudioSet classes", manifest)
                key = record.pack_key or record.id
                if key not in pack:
                    raise ManifestError(f"line {count}: clip {key} is not in {pack.path.name}", manifest)
                if abs(pack.length(key) - round((record.duration or 0) * sample_rate)) > 1:
                    raise ManifestError(f"line {count}: clip {key} duration disagrees with its pack", manifest)
        shard_dir = out_dir / f"{split}.shards"
        if shard_dir.is_dir():
            from avtag.data.streaming import read_shards_info

            info = read_shards_info(shard_dir)
            if info["num_clips"] != len(ids) or info["sample_rate"] != sample_rate:
                raise ManifestError(f"shards hold {info['num_clips']} clips at {info['sample_rate']} Hz, manifest {len(ids)}", shard_dir)
        sizes[split] = len(ids)
    return sizes


def write_union_manifest(parts: Sequence[Path], path: Path) -> Path:
    """Concatenate split manifests (each record keeps its own pack), line by line."""
    with atomic_write(path) as out:
        for part in parts:
            with part.open(encoding="utf-8") as fh:
                for line in fh:
                    out.write(line)
    return path


# ----------------------------------------------------------------------------- driver


def prepare(
    lists: dict[str, Path], class_labels: Path, out_dir: Path, audio_dir: Path | None = None,
    sample_rate: int = 32000, workers: int = 1, shards: bool = True, decode_timeout: float = DECODE_TIMEOUT,
) -> tuple[dict[str, SplitResult], str]:
    """Parse, pair, pack, report and validate; returns the per-split results and the report."""
    labels = read_class_labels(class_labels)
    mid_to_column = {mid: column for column, (mid, _) in enumerate(labels)}
    names = [name for _, name in labels]
    results = {split: SplitResult(read_segments(path, mid_to_column)) for split, path in lists.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = []
    if audio_dir is not None:
        if not audio_dir.is_dir():
            raise InputFileError("audio folder not found", audio_dir)
        clips, duplicates = find_clips(audio_dir)
        notes.append(f"{len(clips)} clip files found under {audio_dir} ({duplicates} duplicates ignored)")
        decoder = Decoder(workers, decode_timeout)  # started before any pack is opened
        try:
            for split, result in results.items():
                pack_split(split, result, clips, out_dir, names, sample_rate, decoder, shards)
        finally:
            decoder.close()
        segments_of = {split: r.segments for split, r in results.items()}
        write_csv(out_dir / "missing.csv", ["split", "clip_id", "mids"],
                   ((split, segments_of[split].keys[row], ";".join(labels[c][0] for c in segments_of[split].columns[row]))
                    for split, r in results.items() for row in r.missing))
        write_csv(out_dir / "failures.csv", ["split", "clip_id", "path", "reason"],
                   ((split, segments_of[split].keys[row], path, reason) for split, r in results.items() for row, path, reason in r.failed))
        sizes = validate_prepared(out_dir, results, names, sample_rate)
        notes.append("validated: " + (", ".join(f"{split} {n} clips" for split, n in sizes.items()) or "no split had clips"))
        if TRAINING_SPLITS[0] in sizes and TRAINING_SPLITS[1] in sizes:
            write_union_manifest([out_dir / f"{split}.jsonl" for split in TRAINING_SPLITS], out_dir / "full_train.jsonl")
            notes.append("full_train.jsonl: balanced_train + unbalanced_train (AudioSet-2M, 000 Table 2, 001 §4.1, 003 [22])")
    write_text(out_dir / CLASS_LABELS_FILE, class_labels.read_text(encoding="utf-8"))  # the configs' class list
    write_csv(out_dir / "unknown_mids.csv", ["split", "clip_id", "mid"],
               ((split, key, mid) for split, r in results.items() for key, mid in r.segments.unknown))
    report = report_table(results, names, audio_dir is not None) + ("\n\n" + "\n".join(notes) if notes else "")
    write_text(out_dir / "report.txt", report + "\n")
    return results, report


def _list_paths(args: argparse.Namespace) -> dict[str, Path]:
    lists: dict[str, Path] = {}
    for split in args.splits:
        if args.lists_dir is None:
            raise InputFileError(f"no list for split {split!r}: give --lists-dir or --segments {split}=PATH")
        lists[split] = args.lists_dir / LIST_FILES[split]
    for item in args.segments:
        split, sep, path = item.partition("=")
        if not sep or not split or not path:
            raise InputFileError(f"--segments takes NAME=PATH, got {item!r}")
        lists[split] = Path(path)
    if not lists:
        raise InputFileError("no segment list given (--lists-dir with --splits, or --segments NAME=PATH)")
    return lists


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avtag prepare audioset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lists-dir", type=Path, help="folder with the segment lists and class_labels_indices.csv")
    parser.add_argument("--splits", nargs="*", choices=list(LIST_FILES), default=None,
                        help="lists to read from --lists-dir (default: those present)")
    parser.add_argument("--segments", action="append", default=[], metavar="NAME=PATH", help="another list, as split NAME")
    parser.add_argument("--class-labels", type=Path, help="class_labels_indices.csv (default: in --lists-dir)")
    parser.add_argument("--audio-dir", type=Path, help="downloaded clips (searched recursively); without it only the lists are checked")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_decoding_arguments(parser, 32000, "rate of the packed audio (default 32000, PANNs-style models)")
    parser.add_argument("--no-shards", action="store_true", help="write HDF5 packs only, no streaming shards")
    return parser


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_decoding_arguments(args)
    if args.splits is None:
        args.splits = [s for s, name in LIST_FILES.items() if args.lists_dir and (args.lists_dir / name).is_file()]
    class_labels = args.class_labels or (args.lists_dir / CLASS_LABELS_FILE if args.lists_dir else None)
    if class_labels is None:
        raise InputFileError("no class labels file: give --class-labels or --lists-dir")
    _, report = prepare(
        _list_paths(args), class_labels, args.out, args.audio_dir, args.sample_rate, args.workers, not args.no_shards,
        args.decode_timeout,
    )
    print(report)
    print(f"\nreport.txt, unknown_mids.csv{', missing.csv, failures.csv, packs and manifests' if args.audio_dir else ''} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
