"""An exclusive lock held by one process at a time (``flock``), for stores on local disk.

Two ``kb ingest`` runs into one folder would otherwise each check which ids
exist and each insert the ones it did not see: duplicates. A writer takes the
store's lock before it opens the store and keeps it until it exits, so the
second writer waits (and says so) and then sees everything the first wrote.
The kernel releases the lock when its holder dies, even under ``kill -9``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from mastctl.errors import BackendError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """``with FileLock(path): ...`` or ``acquire()``/``release()``; re-entrant within one process."""

    def __init__(self, path: Path, *, timeout_s: float = 600.0, on_wait: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.on_wait = on_wait
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FileLock:
        if self._fd is not None:
            self._depth += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not self._try(fd):
                holder = _holder(fd)
                if self.on_wait:
                    self.on_wait(f"waiting for another mastctl process{holder} that is writing to {self.path.parent}")
                deadline = time.monotonic() + self.timeout_s
                while not self._try(fd):
                    if time.monotonic() > deadline:
                        raise BackendError(f"{self.path.parent} stayed locked by another writer{holder} for "
                                           f"{self.timeout_s:.0f} s; try again when it has finished")
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._depth = fd, 1
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _try(fd: int) -> bool:
        if fcntl is None:  # pragma: no cover - no advisory locks: nothing to serialise with
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
