"""``avtag prepare soundscapes``: weakly-labelled 10 s soundscapes from an ESC-50-layout folder.

    avtag prepare soundscapes --events-dir ../shared/data/esc50 --out data/soundscapes \\
        --n-train 400 --n-validation 100 --n-test 120 [--labels esc50|dcase] [--video-dir DIR]

Writes train/validation/test manifests (recordings split by source, so no recording is
heard in two splits), the audio, ``class_labels_indices.csv`` for ``--model.classes``,
``events.csv`` for ``--video-events`` and ``soundscapes.json`` (the parameters). With
``--video-dir`` validation and test are also video files whose picture comes from unrelated
real videos (:mod:`avtag.data.soundscape_video`). The design is in :mod:`avtag.data.soundscapes`.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Sequence

from avtag.data.manifests import read_manifest
from avtag.data.soundscapes import (
    CLASS_FILE,
    DCASE_EVENT_OF,
    DEFAULT_BACKGROUNDS,
    DEFAULT_CLASSES,
    EVENT_FILE,
    LABEL_SOURCES,
    SPLITS,
    make_soundscapes,
)
from avtag.errors import AvtagError, cli_guard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avtag prepare soundscapes",
        description="Mix weakly-labelled soundscapes (1-3 events over a background) from ESC-50-style recordings, "
        "split train/validation/test by source recording.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events-dir", required=True, help="folder with esc50.csv and audio/ (the ESC-50 layout)")
    parser.add_argument("--out", required=True, help="output folder (manifests, audio/, class file)")
    parser.add_argument("--n-train", type=int, default=400, help="training soundscapes (0: no train split, its "
                        "recordings go to validation and test)")
    parser.add_argument("--n-validation", type=int, default=100, help="validation soundscapes (threshold tuning, "
                        "model selection), from their own recordings")
    parser.add_argument("--n-test", type=int, default=120, help="test soundscapes, from their own recordings")
    parser.add_argument("--labels", choices=LABEL_SOURCES, default="esc50",
                        help="class names: ESC-50's categories, or the DCASE 2017 events they correspond to "
                        f"({', '.join(f'{k} -> {v}' for k, v in DCASE_EVENT_OF.items())})")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="ESC-50 categories mixed as labelled events (default: "
                        f"{' '.join(DEFAULT_CLASSES)}; with --labels dcase: {' '.join(sorted(DCASE_EVENT_OF))})")
    parser.add_argument("--backgrounds", nargs="+", default=list(DEFAULT_BACKGROUNDS),
                        help="ESC-50 categories used as stationary backgrounds (never labelled)")
    parser.add_argument("--video-dir", default=None,
                        help="a folder of real videos: validation and test are also written as video files "
                        "(video/{split}/{id}.mp4), the soundscape as sound and a 10 s stretch of one of these "
                        "videos as picture. The picture is NOT the source of the sound: it exercises the "
                        "audio-visual path (eval-batch, fusion fit); train needs no video")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, of every mix and picture")
    parser.add_argument("--snr-db", type=float, nargs=2, default=(0.0, 15.0), metavar=("LO", "HI"),
                        help="event-to-background SNR range in dB, drawn uniformly per event")
    parser.add_argument("--sample-rate", type=int, default=20000, help="sample rate of the written WAV files (Hz)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of every soundscape (s)")
    parser.add_argument("--max-events", type=int, default=3, help="at most this many events (of distinct classes) per clip")
    parser.add_argument("--test-fraction", type=float, default=1 / 3,
                        help="share of each class's recordings held out for test (and again for validation)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.n_train, args.n_validation, args.n_test) < 0 or args.n_train + args.n_validation + args.n_test == 0:
        parser.error("--n-train, --n-validation and --n-test must be >= 0 and not all 0")
    if args.snr_db[0] > args.snr_db[1]:
        parser.error("--snr-db LO must not exceed HI")
    classes = args.classes or []
    if set(classes) & set(args.backgrounds):
        parser.error(f"--classes and --backgrounds overlap: {sorted(set(classes) & set(args.backgrounds))}")
    if args.seconds <= 0 or args.sample_rate <= 0 or args.max_events < 1:
        parser.error("--seconds, --sample-rate and --max-events must be positive")
    if not 0.0 < args.test_fraction < 0.5:
        parser.error("--test-fraction must lie in (0, 0.5)")
    return args


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = make_soundscapes(
            args.events_dir, args.out, args.n_train, args.n_test, seed=args.seed, snr_db=tuple(args.snr_db),
            sample_rate=args.sample_rate, classes=args.classes, background_classes=args.backgrounds,
            seconds=args.seconds, max_events=args.max_events, test_fraction=args.test_fraction,
            n_validation=args.n_validation, labels=args.labels, video_dir=args.video_dir,
        )
    except ValueError as err:  # a bad combination of options
        raise AvtagError(str(err)) from None
    for name, path in sorted(result.manifests.items(), key=lambda item: SPLITS.index(item[0])):
        records = read_manifest(path)
        counts = collections.Counter(label for r in records for label in r.labels)
        summary = ", ".join(f"{c}={counts.get(c, 0)}" for c in result.classes)
        print(f"{name}: {len(records)} clips -> {path}  ({summary})")
    print(f"classes ({len(result.classes)}, for --model.classes): {result.out_dir / CLASS_FILE}")
    print(f"events of the video branch (for --video-events): {result.out_dir / EVENT_FILE}")
    if args.video_dir is not None:
        print(f"validation and test also as video: {result.out_dir / 'video'} (picture unrelated to the sound, "
              f"cut from {args.video_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
