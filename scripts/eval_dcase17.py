"""Batch evaluation of the audio, video and fused systems: a thin wrapper of ``avtag eval-batch``
(:mod:`avtag.evaluation.cli`; ``--help`` lists the inputs, outputs and workflow)."""

import sys

from avtag.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
