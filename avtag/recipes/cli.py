"""``avtag prepare <corpus> ...``: one recipe module per corpus, each with its own ``main(argv)``.

The recipes pair official lists with the clips a user has, report what is missing, pack audio
and write manifests that the trainer and the evaluators read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# corpus -> (module, one-line description)
RECIPES: dict[str, tuple[str, str]] = {
    "dcase17": ("avtag.recipes.dcase17", "DCASE 2017 Task 4: official lists + downloaded clips -> packs, manifests"),
    "soundscapes": ("avtag.recipes.soundscapes", "weak-label soundscapes mixed from ESC-50-style event clips"),
    "audioset": ("avtag.recipes.audioset", "AudioSet segment lists + downloaded clips -> packs, shards, manifests"),
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<12} {text}" for name, (_, text) in RECIPES.items())
    return f"usage: avtag prepare <corpus> [options]   (avtag prepare <corpus> -h for its options)\n\ncorpora:\n{rows}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    corpus, rest = argv[0], argv[1:]
    if corpus not in RECIPES:
        print(f"error: unknown corpus {corpus!r}; known: {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    entry = importlib.import_module(RECIPES[corpus][0]).main
    return getattr(entry, "__wrapped__", entry)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
