"""``avtag run`` (= ``python -m avtag.run``): tag one or several files, or every media file of a
folder, with models loaded once.

    avtag run clip.mp4 [more files or folders] [--audio-checkpoint DIR] [--fusion FILE]
              [--video-config FILE] [--video-events FILE] [--device auto|cpu|cuda] [--top-k K] [--threshold T]
              [--json OUT] [--report OUT.html|OUT.png] [--jsonl OUT] [--csv OUT] [--quiet]

A table is printed per file (:func:`avtag.inference.table.format_table`). With several files a
progress bar runs on stderr, a file that cannot be tagged costs only that file (one line on
stderr, a row with its error in ``--jsonl``/``--csv``), and the exit code is 2 when any failed,
after a one-line summary. Every output file is checked for writability before any analysis
and written atomically; ``--json`` is strict JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from avtag.errors import AvtagError, CheckpointError, InputFileError, check_input_file, cli_guard

MEDIA_SUFFIXES = frozenset(
    ".mp4 .mkv .webm .avi .mov .m4v .mpg .mpeg .flv .wmv .ts .3gp "
    ".wav .flac .mp3 .ogg .oga .opus .m4a .aac .wma .aif .aiff".split())
REPORT_SUFFIXES = (".html", ".htm", ".png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avtag run",
        description="Tag sound events in video or audio files: the audio branch (any checkpoint's classes), "
                    "the video branch (004 §2.2) or both fused (004 §2.3). Several files or folders: models "
                    "load once, one row per file in --jsonl/--csv.")
    parser.add_argument("inputs", nargs="*", metavar="FILE_OR_FOLDER",
                        help="video or audio files, or folders (their media files, recursively, in name order)")
    parser.add_argument("--video", metavar="FILE", action="append", default=[],
                        help="a file to tag (as a positional input; may be repeated)")
    parser.add_argument("--audio", metavar="FILE", help="use this audio file instead of the video's sound track "
                                                        "(one input only)")
    parser.add_argument("--audio-checkpoint", metavar="DIR",
                        help="exported AudioTagger directory or training .ckpt (without it: video branch alone)")
    parser.add_argument("--fusion", metavar="FILE",
                        help="fusion weights/thresholds JSON tuned on validation data (avtag fusion fit); "
                             "without it: the paper's default weights, untuned")
    parser.add_argument("--video-config", metavar="FILE",
                        help="video-branch settings YAML (e.g. configs/video/paper.yaml; default: embedded, offline)")
    parser.add_argument("--video-events", metavar="FILE",
                        help="the events the video branch maps objects to: a CSV 'name,description' (e.g. the "
                             "events.csv of avtag prepare soundscapes); default: the 17 DCASE 2017 events")
    parser.add_argument("--device", default=None, metavar="DEVICE", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--top-k", type=int, default=3, metavar="K",
                        help="how many of the most likely events to list, with their video evidence (default 3)")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="one threshold in [0, 1] on every event instead of the tuned/default ones")
    parser.add_argument("--json", metavar="OUT", help="write the full result as JSON (one input only)")
    parser.add_argument("--report", metavar="OUT", help="write a report: OUT.html (self-contained page) or OUT.png "
                                                        "(one input only)")
    parser.add_argument("--jsonl", metavar="OUT", help="write one JSON line of tags per file")
    parser.add_argument("--csv", metavar="OUT", help="write one CSV row of tags per file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def expand_inputs(named: Sequence[str]) -> list[Path]:
    """Files as given; a folder becomes its media files (recursively, sorted). Missing paths stay
    in the list, so that each costs only itself."""
    files: list[Path] = []
    for item in named:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                raise InputFileError("folder holds no video or audio file", path)
            files.extend(found)
        else:
            files.append(path)
    return files


def _check_arguments(args: argparse.Namespace, inputs: list[Path]) -> None:
    if not inputs:
        raise AvtagError("give at least one file or folder to tag (avtag run clip.mp4)")
    if len(inputs) > 1 and (args.json or args.report or args.audio):
        raise AvtagError(f"--json, --report and --audio take one input ({len(inputs)} given); "
                         "use --jsonl or --csv for several files")
    if args.report and Path(args.report).suffix.lower() not in REPORT_SUFFIXES:
        raise AvtagError(f"--report must end in .html or .png: {args.report}")
    if args.top_k < 1:
        raise AvtagError(f"--top-k must be at least 1, got {args.top_k}")
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise AvtagError(f"--threshold must be a number in [0, 1], got {args.threshold}")
    outputs = [p for p in (args.json, args.report, args.jsonl, args.csv) if p]
    if len({Path(p).resolve() for p in outputs}) < len(outputs):
        raise AvtagError("--json, --report, --jsonl and --csv must be different files")
    from avtag.atomic import check_writable

    for out in outputs:  # before any analysis: a read-only folder costs nothing
        check_writable(out)


def load_fusion_file(path: str | Path):
    """A fusion file over any class list; any problem is one line naming the file."""
    from avtag.fusion import FusionModel
    from avtag.validate import read_json

    data = read_json(path, "an avtag fusion file")
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputFileError("not an avtag fusion file (no list of class names)", path)
    try:
        fusion = FusionModel.load(path, classes=classes)
    except AvtagError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed field is the file's fault
        raise InputFileError(f"not a readable avtag fusion file ({type(err).__name__}: {err})", path) from None
    fusion.settings.setdefault("path", str(path))
    return fusion


def _check_single(path: Path, args: argparse.Namespace):
    """A lone input's cheap checks, before any model loads; its probe."""
    from avtag.video.decode import probe

    check_input_file(path, "a video or audio file")
    if args.audio:
        check_input_file(args.audio, "an audio or video file")
    info = probe(path)  # a non-media or truncated file fails here, in one line
    if not info.has_video and not args.audio_checkpoint:
        raise CheckpointError("is an audio-only file: the audio branch needs --audio-checkpoint", path)
    return info


def _export_sample_rate(checkpoint: str | None) -> int | None:
    """The front-end rate of an export directory, read without torch (``None``: unknown)."""
    if checkpoint is None:
        return None
    try:
        import json

        config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
        rate = config["frontend"]["sample_rate"]
        return int(rate) if isinstance(rate, int) and rate > 0 else None
    except Exception:  # noqa: BLE001 - not an export directory: no early decode, nothing else changes
        return None


def _early_decoding(path: Path, info, args: argparse.Namespace, video_config):
    """Start decoding the first video before torch is imported (when its settings are known)."""
    from avtag.inference.stream import STREAM_MIN_SECONDS

    if not info.has_video or (info.duration or 0.0) > STREAM_MIN_SECONDS:  # long videos stream instead
        return None
    rate = _export_sample_rate(args.audio_checkpoint)
    want_audio = bool(args.audio_checkpoint) or bool(args.report)
    if args.audio_checkpoint and rate is None:
        return None
    from avtag.inference.pipeline import start_decoding

    return start_decoding(path, video_config, rate, want_audio, own_track=args.audio is None)


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs = [Path(v) for v in args.video] + expand_inputs(args.inputs)
    _check_arguments(args, inputs)
    for video in args.video:
        check_input_file(video, "a video or audio file")
    fusion = load_fusion_file(args.fusion) if args.fusion else None
    if args.audio_checkpoint and not Path(args.audio_checkpoint).exists():
        raise CheckpointError("no such audio checkpoint", args.audio_checkpoint)
    video_config = None
    if args.video_config:
        from avtag.video.config import load_video_config

        video_config = load_video_config(args.video_config)
    video_events = None
    if args.video_events:
        from avtag.events import read_event_file

        video_events = read_event_file(args.video_events)
    decoding = None
    if len(inputs) == 1:
        info = _check_single(inputs[0], args)
        decoding = _early_decoding(inputs[0], info, args, video_config)

    from avtag.device import resolve_device  # the torch import starts here, while the file decodes
    from avtag.inference.loading import build_video_branch, load_audio_tagger

    device = resolve_device(args.device)
    tagger = load_audio_tagger(args.audio_checkpoint, device) if args.audio_checkpoint else None
    branch = build_video_branch(video_config, device, events=video_events)
    return _tag_all(inputs, args, tagger, branch, fusion, device, decoding)


def _tag_all(inputs: list[Path], args: argparse.Namespace, tagger, branch, fusion, device, decoding=None) -> int:
    from avtag.inference.pipeline import analyse
    from avtag.inference.table import format_table
    from avtag.inference.tags import error_row, tag_row, write_csv, write_jsonl

    single = len(inputs) == 1
    want_report = bool(args.report)
    rows, failures = [], []
    bar = None
    if not single:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), unit="file", file=sys.stderr, disable=args.quiet, leave=False)
    try:
        for i, path in enumerate(inputs):
            try:
                result = analyse(path, audio_path=args.audio, audio_tagger=tagger, video_branch=branch,
                                 fusion=fusion, device=device, progress=single and not args.quiet,
                                 with_spectrogram=want_report, keep_images=want_report, top_k=args.top_k,
                                 threshold=args.threshold, decoding=decoding if i == 0 else None)
            except Exception as err:  # noqa: BLE001 - with several files, a bad one costs only itself
                if single:
                    raise
                message = str(err) if isinstance(err, AvtagError) else \
                    " ".join(f"{path}: could not be tagged ({type(err).__name__}: {err})".split())
                failures.append(message)
                rows.append(error_row(path, message))
                _write(bar, f"error: {message}", sys.stderr)
            else:
                rows.append(tag_row(result))
                _write(bar, ("" if i == 0 else "\n") + format_table(result), sys.stdout)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if args.jsonl and rows:
            write_jsonl(args.jsonl, rows)
        if args.csv and rows:
            write_csv(args.csv, rows)
    if single:
        _write_single_outputs(result, args)
    if failures:
        print(f"error: {len(failures)} of {len(inputs)} files could not be tagged (first: {failures[0]})",
              file=sys.stderr)
        return 2
    return 0


def _write(bar, text: str, stream) -> None:
    if bar is not None:
        bar.clear()
    print(text, file=stream, flush=True)
    if bar is not None:
        bar.refresh()


def _write_single_outputs(result, args: argparse.Namespace) -> None:
    from avtag.atomic import write_json

    if args.json:
        write_json(args.json, result.to_json(), indent=1)
    if args.report:
        from avtag.report import write_report

        write_report(result, args.report)
