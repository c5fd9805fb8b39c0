"""The console script: Ctrl-C and SIGTERM are one line and exit 130 / 143 from the very first instant.

Importing the CLI takes a moment (typer, the command modules; longer on a first run, which compiles them); a signal in
that moment would otherwise print a traceback (Ctrl-C) or end the process without a word (``timeout``'s SIGTERM, a
batch scheduler's). This module imports nothing heavy: it answers an early signal itself, then hands over to
``mastctl.cli``, whose run takes both signals over (``mastctl.interrupts``).
"""

from __future__ import annotations

import os
import signal
import sys

from mastctl.interrupts import SIGNAL_WORDS  # a light module: signal, threading


def early_signal(signum, frame) -> None:
    """Nothing has been written yet: say why and leave at once, with 128 + the signal's number."""
    sys.stderr.write(f"mastctl: error: {SIGNAL_WORDS.get(signum, 'stopped')}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def answer_early_signals() -> None:
    """``early_signal`` for SIGINT and SIGTERM, unless whoever started us ignores them (nohup, a background job)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, early_signal)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, early_signal)


def run() -> None:
    answer_early_signals()
    from mastctl.cli import main

    raise SystemExit(main())
