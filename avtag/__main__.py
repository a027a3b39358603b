"""``python -m avtag ...`` is the ``avtag`` command."""

import sys

from avtag.cli import main

sys.exit(main())
