"""The console script: Ctrl-C is one line and exit 130 from the very first instant.

Importing the CLI takes a moment (typer, the command modules); an interrupt in
that moment would otherwise print a traceback. This module imports nothing
heavy: it answers an early Ctrl-C itself, then hands over to ``mastctl.cli``.
"""

from __future__ import annotations

import os
import signal
import sys


def _early_interrupt(signum, frame) -> None:  # nothing has been written yet: leave at once
    sys.stderr.write("mastctl: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def run() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _early_interrupt)
    from mastctl.cli import main

    raise SystemExit(main())
