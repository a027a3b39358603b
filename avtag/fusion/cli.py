"""``avtag fusion fit`` / ``python -m avtag.fusion fit``: tune a fusion file on a validation run."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from avtag.errors import InputFileError, cli_guard
from avtag.fusion.fit import FEW_CLIPS, fit_eval_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avtag fusion",
                                     description="Late fusion of the audio and video branches (004 §2.3, §3.4).")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser(
        "fit", help="tune fusion weights and thresholds on a validation evaluation run",
        description="Tune per-class fusion weights and thresholds on the branch probabilities written by "
                    "avtag eval-batch for a validation split; evaluate other splits with --fusion OUT. "
                    f"Warns when tuning on fewer than {FEW_CLIPS} clips.")
    fit.add_argument("--eval-dir", required=True, help="output folder of avtag eval-batch (validation split)")
    fit.add_argument("--manifest", help="manifest with the labels (default: the one recorded in run_info.json)")
    fit.add_argument("--out", required=True, help="fusion JSON to write")
    fit.add_argument("--method", choices=("rule", "search"), default="rule",
                     help="the paper's 0.8/0.2 rule (004 §3.4, default) or the per-class weight search "
                          "(our documented improvement)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the threshold and weight search order (default 0)")
    fit.add_argument("--split", help="name of the tuning split (default: the clips' split field, else the "
                                     "manifest's file name)")
    fit.add_argument("--skip-incomplete", action="store_true",
                     help="drop clips without both branches instead of refusing")
    return parser


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``avtag fusion``."""
    from avtag.atomic import check_writable

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.is_dir():
        raise InputFileError("is a directory; --out names the fusion JSON file", out)
    check_writable(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit_eval_run(args.eval_dir, args.manifest, method=args.method, seed=args.seed, split=args.split,
                             skip_incomplete=args.skip_incomplete)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    model.settings["eval_dir"] = str(args.eval_dir)
    model.save(out)
    f1 = model.validation["micro_f1"]
    print(f"{out}: {model.method} fusion on {len(model.classes)} classes, tuned on split "
          f"{model.tuned_on['split']!r} ({model.tuned_on['num_clips']} clips)")
    print(f"validation micro-F1 with thresholds re-tuned on these clips (not the checkpoint's): "
          f"audio {100 * f1['audio']:.1f}, video {100 * f1['video']:.1f}, fused {100 * f1['fused']:.1f}")
    if model.tuned_on["skipped_clips"]:
        print(f"skipped {len(model.tuned_on['skipped_clips'])} clips without both branches")
    if model.tuned_on.get("ignored_labels"):
        print(f"ignored {model.tuned_on['ignored_labels']} labels outside the {len(model.classes)} classes "
              "both branches share")
    return 0
