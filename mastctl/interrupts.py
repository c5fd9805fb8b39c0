"""Ctrl-C (and SIGTERM), delivered only where stopping is safe.

Ctrl-C raises KeyboardInterrupt between any two bytecodes; so does SIGTERM
(``timeout``, a batch scheduler, ``kill``) during a CLI run, which by default
would kill the process on the spot and leave an output's temporary file
behind. Two places must not see it:

- an import: torch (and other extensions) run Python from C++ while they
  import; an exception there aborts the process (exit -6, a core dump) or
  leaves the module half-initialised ("initialization failed");
- a function marked :func:`shielded`, such as the few lines that create or
  rename an output's temporary file, which would otherwise be left behind.

There the interrupt is recorded and delivered again every 0.1 s until the
run has left such a place; a second Ctrl-C meanwhile (an import that hangs)
leaves at once. :func:`install` sets this up for one CLI run,
:func:`restore` ends it (running what :func:`at_stop` registered, such as the
removal of unfinished outputs) and puts the previous handlers back, :func:`stopped_by` says what
stopped the run and its exit code (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_SHIELDED: set[Any] = set()  # code objects of the functions an interrupt must not stop
_state: dict[str, Any] = {"signal": None, "finished": False, "waiting": False, "redelivered": False}
_retry: list[threading.Timer] = []
_at_stop: list[Callable[[], None]] = []  # run as a run ends, however it ends (writers: remove unfinished outputs)
SIGNAL_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}  # what stopped a run, as its last line says


def shielded(fn: F) -> F:
    """Mark ``fn`` as a place where Ctrl-C waits until it returns."""
    _SHIELDED.add(fn.__code__)
    return fn


def at_stop(fn: F) -> F:
    """Run ``fn`` as each run ends (:func:`restore`), or before a forced exit."""
    _at_stop.append(fn)
    return fn


def _run_at_stop() -> None:
    for fn in _at_stop:
        fn()


def unsafe(frame) -> bool:
    """Whether the code running in ``frame`` (or a caller) is an import or shielded."""
    while frame is not None:
        code = frame.f_code
        if code in _SHIELDED or code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM came during this run (delivered or still waiting)."""
    return _state["signal"] is not None


def stopped_by() -> tuple[str, int]:
    """What stopped the run, in a word, and the exit code that says so (128 + the signal's number)."""
    signum = _state["signal"] or signal.SIGINT
    return SIGNAL_WORDS.get(signum, "interrupted"), 128 + int(signum)


def _redeliver(signum: int) -> None:
    _state["redelivered"] = True
    if hasattr(signal, "pthread_kill"):  # a real signal: it also wakes a main thread that sleeps or waits
        signal.pthread_kill(threading.main_thread().ident, signum)
    else:
        _thread.interrupt_main(signum)


def _handle(signum, frame) -> None:
    again = _state["redelivered"]  # our own re-delivery, not another press of Ctrl-C
    _state["redelivered"] = False
    if _state["signal"] is None:
        _state["signal"] = signum
    if _state["finished"]:
        return  # counted in the exit code already
    if unsafe(frame):
        if _state["waiting"] and not again:
            _leave_now()  # a second signal while the first waits (an import that hangs): leave at once
        _state["waiting"] = True
        retry = threading.Timer(0.1, _redeliver, args=(signum,))
        retry.daemon = True
        _retry[:] = [retry]
        retry.start()
        return
    _state["waiting"] = False
    raise KeyboardInterrupt


def _leave_now() -> None:
    """Exit at once, without unwinding (an exception cannot safely cross an import): the unfinished outputs'
    temporary files are removed first."""
    _run_at_stop()
    word, code = stopped_by()
    os.write(2, f"mastctl: error: {word}\n".encode())
    os._exit(code)


def install() -> dict[int, Any]:
    """Take over SIGINT and SIGTERM for one run (main thread only; a signal ignored or already handled by the
    caller is left alone); returns the handlers to restore."""
    _state.update(signal=None, finished=False, waiting=False, redelivered=False)
    if threading.current_thread() is not threading.main_thread():
        return {}
    from mastctl.entry import early_signal  # the console script's answer while the CLI was imported: ours to replace

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN or (signum == signal.SIGTERM and current not in (signal.SIG_DFL, early_signal)):
            continue  # ignored by whoever started us (nohup, a background job), or a caller of main() handles it
        previous[signum] = signal.signal(signum, _handle)
    return previous


def restore(previous: dict[int, Any]) -> None:
    """The run is over: drop a waiting re-delivery, run the :func:`at_stop` functions and put the ``previous``
    handlers back."""
    _state["finished"] = True
    for retry in _retry:
        retry.cancel()
    _run_at_stop()
    for signum, handler in previous.items():
        signal.signal(signum, handler)
