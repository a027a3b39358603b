"""The ``avtag`` command.

``avtag export CKPT OUT/``
    Write a Lightning checkpoint (or another export) as an :class:`AudioTagger` export:
    ``OUT/model.safetensors`` + ``OUT/config.json`` (``"frontend": null`` for a model
    trained on precomputed features). Loading reads tensors with safetensors
    and checkpoints with ``torch.load(weights_only=True)``: no code is ever unpickled.
``avtag models``
    List the registered model names.
``avtag evaluate ...``
    Same as ``python -m avtag.evaluate ...``.

Training has its own LightningCLI: ``python -m avtag.train fit --config ...``.
"""

from __future__ import annotations

import argparse
import sys

from avtag.errors import cli_guard


def _export(args: argparse.Namespace) -> int:
    from avtag.audio.tagger import export_checkpoint

    model, config = export_checkpoint(args.checkpoint, args.out)
    inputs = ", takes precomputed features" if config["frontend"] is None else ""
    print(
        f"exported {model.model_name} ({model.num_parameters:,} parameters, "
        f"{len(config['classes'])} classes{inputs}) to {args.out}"
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from avtag.audio.models.base import available_models, get

    for name in available_models():
        doc = (get(name).__doc__ or "").strip().splitlines()
        print(f"{name:<16} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avtag", description="Weakly-labelled sound-event tagging.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a checkpoint as safetensors + config.json")
    export.add_argument("checkpoint", help="Lightning .ckpt, torch.save-d serialize() file or export directory")
    export.add_argument("out", help="output directory")
    export.set_defaults(run=_export)
    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(run=_models)
    commands.add_parser("evaluate", help="evaluate a tagger on a manifest (see: avtag evaluate -h)", add_help=False)
    return parser


@cli_guard
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:
        from avtag.evaluate import main as evaluate_main

        return evaluate_main.__wrapped__(argv[1:])  # already inside this cli_guard
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
