"""Ctrl-C, delivered only where stopping is safe.

Python raises KeyboardInterrupt between any two bytecodes. Two places must not
see it:

- an import: torch (and other extensions) run Python from C++ while they
  import; an exception there aborts the process (exit -6, a core dump) or
  leaves the module half-initialised ("initialization failed");
- a function marked :func:`shielded`, such as the few lines that create or
  rename an output's temporary file, which would otherwise be left behind.

There the interrupt is recorded and delivered again every 0.1 s until the
run has left such a place. :func:`install` sets this up for one CLI run,
:func:`restore` puts the previous handler back.
"""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_SHIELDED: set[Any] = set()  # code objects of the functions an interrupt must not stop
_state = {"interrupted": False, "finished": False}
_retry: list[threading.Timer] = []


def shielded(fn: F) -> F:
    """Mark ``fn`` as a place where Ctrl-C waits until it returns."""
    _SHIELDED.add(fn.__code__)
    return fn


def unsafe(frame) -> bool:
    """Whether the code running in ``frame`` (or a caller) is an import or shielded."""
    while frame is not None:
        code = frame.f_code
        if code in _SHIELDED or code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def interrupted() -> bool:
    """Whether Ctrl-C came during this run (delivered or still waiting)."""
    return _state["interrupted"]


def _handle(signum, frame) -> None:
    _state["interrupted"] = True
    if _state["finished"]:
        return  # counted in the exit code already
    if unsafe(frame):
        retry = threading.Timer(0.1, _thread.interrupt_main)
        retry.daemon = True
        _retry[:] = [retry]
        retry.start()
        return
    raise KeyboardInterrupt


def install():
    """Take over SIGINT for one run (main thread only); returns the handler to restore, or None."""
    _state.update(interrupted=False, finished=False)
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return None
    return signal.signal(signal.SIGINT, _handle)


def restore(previous) -> None:
    """The run is over: drop a waiting re-delivery and put ``previous`` back."""
    _state["finished"] = True
    for retry in _retry:
        retry.cancel()
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
