"""``python -m avtag.fusion``."""

import sys

from avtag.fusion.cli import main

sys.exit(main())
