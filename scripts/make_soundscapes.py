"""Build weakly-labelled 10 s soundscapes from an ESC-50-layout folder of event clips.

    python scripts/make_soundscapes.py --events-dir ../shared/data/esc50 --out runs/soundscapes \
        --n-train 400 --n-test 120 --seed 0

Writes audio/{train,test}/*.wav, train.jsonl + test.jsonl (ClipRecord manifests with
clip labels and true event onsets/offsets), classes.txt and soundscapes.json. See
:mod:`avtag.data.soundscapes` for the design (classes, backgrounds, SNR, split by source).
"""

from __future__ import annotations

import argparse
import collections

from avtag.data.manifests import read_manifest
from avtag.data.soundscapes import DEFAULT_BACKGROUNDS, DEFAULT_CLASSES, make_soundscapes
from avtag.errors import cli_guard


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-dir", required=True, help="folder with esc50.csv and audio/")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-train", type=int, required=True)
    parser.add_argument("--n-test", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snr-db", type=float, nargs=2, default=(0.0, 15.0), metavar=("LO", "HI"))
    parser.add_argument("--sample-rate", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES))
    parser.add_argument("--backgrounds", nargs="+", default=list(DEFAULT_BACKGROUNDS))
    parser.add_argument("--max-events", type=int, default=3)
    args = parser.parse_args(argv)
    if args.n_train < 0 or args.n_test < 0 or args.n_train + args.n_test == 0:
        parser.error("--n-train and --n-test must be >= 0 and not both 0")
    if args.snr_db[0] > args.snr_db[1]:
        parser.error("--snr-db LO must not exceed HI")
    if set(args.classes) & set(args.backgrounds):
        parser.error(f"--classes and --backgrounds overlap: {sorted(set(args.classes) & set(args.backgrounds))}")
    if args.seconds <= 0 or args.sample_rate <= 0 or args.max_events < 1:
        parser.error("--seconds, --sample-rate and --max-events must be positive")
    return args


@cli_guard
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = make_soundscapes(
        args.events_dir, args.out, args.n_train, args.n_test, seed=args.seed, snr_db=tuple(args.snr_db),
        sample_rate=args.sample_rate, classes=args.classes, background_classes=args.backgrounds,
        seconds=args.seconds, max_events=args.max_events,
    )
    for name, path in result.manifests.items():
        records = read_manifest(path)
        counts = collections.Counter(label for r in records for label in r.labels)
        summary = ", ".join(f"{c}={counts.get(c, 0)}" for c in result.classes)
        print(f"{name}: {len(records)} clips -> {path}  ({summary})")
    print(f"classes: {result.out_dir / 'classes.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
