"""A console log QEMU appends to, kept to a bounded size with one previous file.

QEMU writes the serial log itself (``logfile=…,logappend=on``: O_APPEND), so
the log also covers the time no vmanager process is attached. Whoever is
attached checks the size as output arrives; past ``limit`` the log's content
moves to ``NAME.1`` (replacing the older one) and the log is truncated in
place, where QEMU's next append lands at the start. Output QEMU writes in the
moment between reading and truncating is lost from the file (not from the
console's memory). While nobody is attached the log can pass the limit; it is
rotated at the next attach.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Final

#: Default size at which a console log is rotated.
DEFAULT_LOG_LIMIT: Final = 4 << 20

_log = logging.getLogger(__name__)


def _open(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def read_tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of ``path`` (without following a symlink); b"" if absent."""
    try:
        fd = _open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - limit), os.SEEK_SET)
        chunks, left = [], min(size, limit)
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class RotatingLog:
    """Keeps ``path`` under about ``limit`` bytes, with ``path.1`` the previous content."""

    def __init__(self, path: Path, limit: int = DEFAULT_LOG_LIMIT) -> None:
        self.path = Path(path)
        self.previous = self.path.with_name(self.path.name + ".1")
        self.limit = limit
        self._lock = threading.Lock()
        self._unchecked = 0

    def history(self, limit: int) -> bytes:
        """The last ``limit`` bytes of the previous file and the log, oldest first."""
        now = read_tail(self.path, limit)
        if len(now) >= limit:
            return now
        return read_tail(self.previous, limit - len(now)) + now

    def grown(self, nbytes: int) -> None:
        """Output of ``nbytes`` arrived: rotate when the log is past the limit.

        The size is looked at every 64 KiB of output.
        """
        self._unchecked += nbytes
        if self._unchecked < 65536:
            return
        self._unchecked = 0
        self.check()

    def check(self) -> bool:
        """Rotate if the log is over the limit; whether it did."""
        with self._lock:
            try:
                fd = _open(self.path, os.O_RDWR)
            except OSError:
                return False
            try:
                size = os.fstat(fd).st_size
                if size <= self.limit:
                    return False
                # the previous file keeps the last `limit` bytes (a log that grew
                # far past it while nobody was attached loses its middle)
                os.lseek(fd, size - self.limit, os.SEEK_SET)
                parts = []
                while chunk := os.read(fd, 1 << 20):
                    parts.append(chunk)
                os.ftruncate(fd, 0)
                data = b"".join(parts)
            finally:
                os.close(fd)
            tmp = self.previous.with_name(self.previous.name + ".tmp")
            try:
                out = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out, view):]
                finally:
                    os.close(out)
                os.replace(tmp, self.previous)
            except OSError as exc:
                _log.warning("rotating %s: %s", self.path, exc)
            return True
