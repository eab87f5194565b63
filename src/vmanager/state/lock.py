"""File locks (``fcntl.flock``) that keep processes sharing a state directory apart.

A lock is a file under ``state_dir()/locks``; the kernel drops it when the
holder's descriptor closes, so a crashed process never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from vmanager import paths, validate
from vmanager.errors import StateError


def lock_path(kind: str, name: str) -> Path:
    """The lock file guarding ``kind`` ``name`` (``machine``, ``lab``...)."""
    validate.name(name, what=f"{kind} name")
    return paths.private_dir(paths.state_dir() / "locks") / f"{kind}-{name}.lock"


class FileLock:
    """An exclusive (or shared) ``flock`` on one file, acquired with a timeout.

    >>> with FileLock(lock_path("machine", "web"), what="machine 'web'"):  # doctest: +SKIP
    ...     ...

    ``acquire`` raises :class:`StateError` naming the holder (its pid, written
    into the file) when the lock stays taken for ``timeout`` seconds.
    """

    def __init__(self, path: Path, *, what: str, shared: bool = False) -> None:
        self.path = path
        self.what = what
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float = 30.0) -> FileLock:
        """Take the lock, waiting up to ``timeout`` s (0: try once)."""
        if self._fd is not None:
            return self
        fd = paths.open_lock(self.path)
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        delay = 0.01
        try:
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    raise StateError(f"{self.what} is busy: another process"
                                     f"{f' (pid {holder})' if holder else ''} holds "
                                     f"{self.path} and did not let go within {timeout} s")
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        except BaseException:
            os.close(fd)
            raise
        if not self.shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                if not self.shared:
                    os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def locked(kind: str, name: str, *, timeout: float = 30.0) -> Iterator[FileLock]:
    """Hold the exclusive lock for ``kind`` ``name`` for the ``with`` block."""
    lock = FileLock(lock_path(kind, name), what=f"{kind} {name!r}")
    lock.acquire(timeout)
    try:
        yield lock
    finally:
        lock.release()
