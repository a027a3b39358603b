"""The ``avtag`` command: one verb per entry point, each a thin door to its module.

==================  =========================================================  ==============================
verb                what                                                       same as
==================  =========================================================  ==============================
``run``             tag clips (audio, video, fusion)                           ``python -m avtag.run``
``train``           LightningCLI training (``fit``/``validate``/``test``/...)   ``python -m avtag.train``
``evaluate``        evaluate an audio tagger on a manifest                     ``python -m avtag.evaluate``
``eval-batch``      resumable audio/video/fused batch evaluation               ``scripts/eval_dcase17.py``
``fusion``          fit a fusion file on a validation evaluation run           ``python -m avtag.fusion``
``prepare``         corpus recipes (``dcase17``, ``soundscapes``, ...)         ``scripts/prepare_*.py``
``export``          checkpoint -> safetensors + config.json                    —
``models``          the registered models (``--verbose``: constructor args)    —
``doctor``          versions, embedded weights, CUDA; non-zero on a problem    ``python -m avtag --version --verbose``
==================  =========================================================  ==============================

Verbs that own a parser elsewhere get the rest of the command line unchanged.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from avtag.errors import cli_guard

# verb -> (module, function, help): the module's ``main(argv)`` receives the remaining arguments.
DELEGATED: dict[str, tuple[str, str, str]] = {
    "run": ("avtag.run", "main", "tag audio/video files (see: avtag run -h)"),
    "train": ("avtag.train", "main", "train with LightningCLI (see: avtag train -h)"),
    "evaluate": ("avtag.evaluate", "main", "evaluate a tagger on a manifest (see: avtag evaluate -h)"),
    "eval-batch": ("avtag.evaluation.cli", "main", "resumable batch evaluation of audio/video/fused systems"),
    "fusion": ("avtag.fusion", "main", "fit a fusion file from a validation evaluation run"),
    "prepare": ("avtag.recipes.cli", "main", "corpus recipes: pair, report, pack, write manifests"),
    "doctor": ("avtag.doctor", "main", "check the installation: versions, embedded weights, CUDA"),
}


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
    import inspect

    from avtag.audio.models.base import available_models, get

    for name in available_models():
        model_class = get(name)
        doc = (model_class.__doc__ or "").strip().splitlines()
        print(f"{name:<16} {doc[0] if doc else ''}")
        if not args.verbose:
            continue
        for parameter in list(inspect.signature(model_class.__init__).parameters.values())[1:]:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            default = "required" if parameter.default is parameter.empty else f"default {parameter.default!r}"
            annotation = parameter.annotation if isinstance(parameter.annotation, str) else getattr(
                parameter.annotation, "__name__", str(parameter.annotation))
            annotation = "" if parameter.annotation is parameter.empty else f": {annotation}"
            print(f"    {parameter.name}{annotation}  ({default})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avtag", description="Weakly-labelled sound-event tagging.")
    parser.add_argument("--version", action="store_true", help="print the version (with --verbose: run doctor)")
    parser.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command")
    for verb, (_, _, help_text) in DELEGATED.items():
        commands.add_parser(verb, help=help_text, add_help=False)
    export = commands.add_parser("export", help="export a checkpoint as safetensors + config.json")
    export.add_argument("checkpoint", help="Lightning .ckpt, torch.save-d serialize() file or export directory")
    export.add_argument("out", help="output directory")
    export.set_defaults(run=_export)
    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("--verbose", "-v", action="store_true",
                        help="also list every model's constructor arguments with their defaults (model_args in a config)")
    models.set_defaults(run=_models)
    return parser


def _delegate(verb: str, argv: list[str]) -> int | None:
    module_name, function, _ = DELEGATED[verb]
    entry = getattr(importlib.import_module(module_name), function)
    entry = getattr(entry, "__wrapped__", entry)  # already inside this cli_guard
    return entry(argv)


@cli_guard
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:]) or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        if args.verbose:
            return _delegate("doctor", [])
        import avtag

        print(f"avtag {avtag.__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    return args.run(args)


def console_main() -> None:
    """The ``avtag`` console script and ``python -m avtag``: :func:`main`, except that ``avtag run``
    leaves through :func:`avtag.run.run_and_exit` (flush, then exit at once: every output is already
    renamed into place, and skipping interpreter teardown saves ~1 s per clip run; issue 9)."""
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        from avtag.run import run_and_exit

        run_and_exit(argv[1:])
    sys.exit(main(argv))


if __name__ == "__main__":
    console_main()
