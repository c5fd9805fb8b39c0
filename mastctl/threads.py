"""Thread pools that do not fight over the cores (one BLAS thread while torch runs the detector's nets, each worker
process its share of the cores), and torch left unloaded where loading it would cost more than it saves.

numpy's OpenBLAS runs its matrix products on every core, and its worker threads then keep spinning for a while in
case another product comes. The morphology detector mixes small numpy products (stain separation, the nets' linear
heads) with torch convolutions (the nucleus finder, the crop net), which run on every core too: each torch
convolution then shared the cores with spinning BLAS threads. Measured on 2 cores (2026-12-06, the 50 CRC tiles):
detection 112 ms a tile, 71 ms with BLAS on one thread — the crop net 53 -> 22 ms, the finder 17 -> 10 ms — and the
same cells (the arithmetic is the same; only who runs it changes). Without torch the numpy convolutions are BLAS
products themselves, so the detector asks for this only where torch runs the nets.

``threadpoolctl`` (a dependency) sets and restores the limit; where it or a BLAS it knows is missing, nothing changes.
Worker processes (``--workers N``: slide tiles, kb ingest) each start every pool with a thread per core, so N workers
ran N threads to a core; ``share_the_cores`` gives each its share (a 0.06 gigapixel synthetic slide on 2 cores,
bench/wsi.py --size 8000: 20 s with 2 workers, 10 s with their share, 12 s with one worker; the same cells).

The limit is process-wide, so nested and concurrent users share it: the first in sets it, the last out restores it.
(OpenBLAS 0.3.31 did not take a limit set from a worker thread once one set from the main thread had been restored:
a detector run from worker threads may then keep every BLAS thread, which costs speed, not results.)

A ``detect`` run of a megapixel or less (``detection.SMALL_RUN_PIXELS``) runs the nets on numpy unless torch is loaded
already (``numpy_unless_torch_is_loaded``): loading torch takes about 0.7 s and 200 MB, more than numpy's nets take on
such a run, and the two give the same cells (the same labels and places on 70 test images; confidences within 1e-6).

What torch computes the nets in (``net_precision``: bfloat16 where AMX runs it, float32 elsewhere) is decided here too.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_users = 0
_limiter = None
_small_run = False


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Inside, numpy's BLAS runs on one thread (as ``OPENBLAS_NUM_THREADS=1`` would); outside, as it was."""
    global _users, _limiter
    with _lock:
        if _users == 0:
            controller = _controller()
            _limiter = controller.limit(limits=1, user_api="blas") if controller is not None else None
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def blas_for_the_nets(precision: str = "float32"):
    """The BLAS threads the morphology nets run with: one (``one_blas_thread``) where torch runs them; where numpy does,
    every thread, since their convolutions are BLAS products (a context manager either way)."""
    from contextlib import nullcontext

    return one_blas_thread() if torch_runs_the_nets(precision) else nullcontext()


@functools.cache
def _controller():
    """threadpoolctl's view of the loaded thread pools (found once: about 3 ms), or None without it."""
    try:
        import numpy  # noqa: F401  (a BLAS must be loaded to be found: numpy's, and scipy's, which the detector loads anyway)
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def share_the_cores(workers: int) -> None:
    """A worker process's initializer: its pools (torch's OpenMP, numpy's BLAS) get ``cores // workers`` threads each,
    at least one, unless the caller's environment names a number. The pools read these variables when they load:
    torch when the worker builds its detector, after this; numpy may be loaded already, by the main module a spawned
    worker imports first (the detector's ``one_blas_thread`` then holds its BLAS anyway)."""
    import os

    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, threads)


def torch_runs_the_nets(precision: str = "float32") -> bool:
    """Whether torch runs the morphology nets (the crop net and the nucleus finder): installed, not turned off, and
    either loaded already or not in a run too small to repay loading it (``numpy_unless_torch_is_loaded``) — unless
    the nets are to run in bfloat16 (``precision``, resolved by ``net_precision``), which numpy cannot: then torch
    runs them in a small run too, so that an image gives the same cells alone as in a larger run."""
    import sys

    if _small_run and "torch" not in sys.modules and net_precision(precision) == "float32":
        return False
    return torch_installed()


def torch_installed() -> bool:
    """Whether torch can run the nets at all: installed (imported or not) and not turned off (``MASTCTL_NUMPY_NET``)."""
    import importlib.util
    import os
    import sys

    if os.environ.get("MASTCTL_NUMPY_NET"):  # force the numpy path (tests compare the two)
        return False
    if "torch" in sys.modules:  # imported already, or blocked (None: a test's stand-in for "not installed")
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


@contextmanager
def numpy_unless_torch_is_loaded(small_run: bool) -> Iterator[None]:
    """Inside, with ``small_run``, the morphology nets run on numpy unless torch is loaded already
    (``torch_runs_the_nets``); outside, as before."""
    global _small_run
    before, _small_run = _small_run, bool(small_run)
    try:
        yield
    finally:
        _small_run = before


NET_PRECISIONS = ("auto", "float32", "bfloat16")


def net_precision(requested: str = "auto") -> str:
    """``float32`` or ``bfloat16``: what the morphology nets compute in where torch runs them (numpy: always float32).

    ``auto`` is bfloat16 on a CPU with AMX tiles (Intel Sapphire Rapids and later), whose matrix units run bfloat16
    convolutions several times faster (the crop net 11 ms for 384 crops against 35, the finder 10 ms a CRC tile
    against 20; detection of the 50 CRC tiles about 10x their decode against 12.8x), and float32 elsewhere.
    bfloat16 keeps 8 bits of mantissa: on 2026-12-07's machine 99.5-99.9% of the cells of 50 CRC tiles, tb2's ccMCT
    crops and a synthetic draw had a bfloat16 cell within 1 px with the same label, and bench/real_tissue.py's
    figures moved by at most 0.002 (the skin's calls 4 -> 5; README). ``-O net_precision=float32`` gives the float32
    cells on every machine."""
    if requested not in NET_PRECISIONS:
        from mastctl.errors import UsageError

        raise UsageError(f"net precision {requested!r}: use {', '.join(NET_PRECISIONS)}")
    if requested != "auto":
        return requested
    return "bfloat16" if _amx_tiles() else "float32"


@functools.cache
def _amx_tiles() -> bool:
    """Whether this CPU has AMX tiles: Linux lists ``amx_tile`` among a processor's flags in /proc/cpuinfo once the
    kernel lets programs use them (read without importing torch; elsewhere, False: float32)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and "amx_tile" in line.split() for line in fh)
    except OSError:
        return False
