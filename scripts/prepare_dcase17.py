#!/usr/bin/env python
"""Thin wrapper of ``avtag prepare dcase17`` (:mod:`avtag.recipes.dcase17`), kept for older
instructions: ``python scripts/prepare_dcase17.py --official-dir ... --audio-dir ... --out ...``."""

from __future__ import annotations

import sys

from avtag.recipes.dcase17 import main

if __name__ == "__main__":
    sys.exit(main())
