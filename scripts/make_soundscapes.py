"""Thin wrapper of ``avtag prepare soundscapes`` (:mod:`avtag.recipes.soundscapes`), kept for
older instructions: ``python scripts/make_soundscapes.py --events-dir ... --out ...``."""

from __future__ import annotations

from avtag.recipes.soundscapes import main

if __name__ == "__main__":
    raise SystemExit(main())
