"""One BLAS thread while torch runs the detector's nets (mastctl/threads.py): set inside, restored after, shared."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

from mastctl import registry, threads  # noqa: E402
from mastctl.imaging import Image  # noqa: E402
from mastctl.profile import Profile  # noqa: E402


def blas_threads(controller=None) -> set[int]:
    """The thread counts of the BLAS libraries, as the limit's own controller reads them."""
    controller = controller or threads._controller()
    return {lib.num_threads for lib in controller.lib_controllers if lib.user_api == "blas"}


@pytest.fixture
def two_blas_threads():
    if threads._controller() is None or not blas_threads():
        pytest.skip("no BLAS threadpoolctl knows is loaded")
    limiter = threads._controller().limit(limits=2, user_api="blas")  # as on a 2-core machine, whatever this one has
    try:
        yield
    finally:
        limiter.restore_original_limits()


def test_one_blas_thread_inside_and_the_original_count_after_also_when_nested(two_blas_threads):
    assert blas_threads() == {2}
    with threads.one_blas_thread():
        assert blas_threads() == {1}
        with threads.one_blas_thread():  # nested: the inner exit does not restore it
            assert blas_threads() == {1}
        assert blas_threads() == {1}
    assert blas_threads() == {2}


def test_concurrent_users_share_one_limit_the_last_out_restores_it(monkeypatch):
    """Two threads inside at once (a threaded executor): the first in sets the limit, the first out leaves it for the
    other. (Counted on a stand-in controller: OpenBLAS itself may not take a limit set from a worker thread after one
    from the main thread was restored, which costs only speed.)"""
    calls = []

    class Limiter:
        def restore_original_limits(self):
            calls.append("restore")

    class Controller:
        def limit(self, limits, user_api):
            calls.append(("limit", limits, user_api))
            return Limiter()

    monkeypatch.setattr(threads, "_controller", Controller)
    inside, first_out, during = threading.Barrier(2), threading.Event(), []

    def user(first: bool):
        with threads.one_blas_thread():
            inside.wait()
            if first:
                return first_out.set()
            first_out.wait()
            during.append(list(calls))

    workers = [threading.Thread(target=user, args=(k == 0,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert during == [[("limit", 1, "blas")]] and calls == [("limit", 1, "blas"), "restore"]
    assert threads._users == 0 and threads._limiter is None


def test_without_threadpoolctl_nothing_changes(two_blas_threads, monkeypatch):
    controller = threads._controller()
    threads._controller.cache_clear()
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    try:
        with threads.one_blas_thread():
            assert threads._controller() is None and blas_threads(controller) == {2}
    finally:
        threads._controller.cache_clear()


def _blas_during_detection(monkeypatch, **options) -> set[int]:
    import mastctl.morphology as morphology

    seen = []
    classify = morphology.classify

    def watching(*args, **kwargs):
        seen.append(blas_threads())
        return classify(*args, **kwargs)

    monkeypatch.setattr(morphology, "classify", watching)
    rng = np.random.default_rng(0)
    pixels = (200 + rng.integers(-40, 40, (96, 96, 3))).clip(0, 255).astype(np.uint8)
    registry.create("detector", "morphology", Profile(), **options).detect(Image(pixels=pixels, mpp=0.5, path="t.png"))
    return seen[0]


def test_the_detector_runs_with_one_blas_thread_where_torch_runs_its_nets(two_blas_threads, monkeypatch):
    pytest.importorskip("torch")
    assert _blas_during_detection(monkeypatch) == {1} and blas_threads() == {2}
    # the nets on numpy: their convolutions are BLAS products, which keep every thread
    monkeypatch.setenv("MASTCTL_NUMPY_NET", "1")
    assert _blas_during_detection(monkeypatch) == {2}
    monkeypatch.delenv("MASTCTL_NUMPY_NET")
    assert _blas_during_detection(monkeypatch, mast_net="none", nuclei="none") == {2}  # no net at all


def test_each_worker_process_gets_its_share_of_the_cores_unless_the_caller_named_one(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the caller's own choice stays
    threads.share_the_cores(3)
    import os

    assert [os.environ[n] for n in threads.THREAD_VARIABLES] == ["2", "2", "3"]
    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name)
    threads.share_the_cores(16)  # more workers than cores: one thread each, never none
    assert {os.environ[n] for n in threads.THREAD_VARIABLES} == {"1"}


def test_slide_tiles_in_two_workers_run_with_a_core_each(tmp_path, monkeypatch):
    """The tile pool's workers start with their share of the cores (on 2 cores with 2 workers: one thread each)."""
    from concurrent import futures

    from mastctl.wsi import tiles

    seen = {}

    class Pool:
        def __init__(self, max_workers, mp_context, initializer, initargs):
            seen.update(workers=max_workers, initializer=initializer, initargs=initargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, items, chunksize):
            return []

    monkeypatch.setattr(futures, "ProcessPoolExecutor", Pool)
    list(tiles.execute([object(), object(), object()], spec=None, workers=2))
    assert seen == {"workers": 2, "initializer": threads.share_the_cores, "initargs": (2,)}
