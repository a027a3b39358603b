"""``python -m avtag ...`` is the ``avtag`` command."""

from avtag.cli import console_main

console_main()
