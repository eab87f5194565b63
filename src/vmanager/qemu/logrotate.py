"""Reading a console log that is rotated with one previous file.

QEMU logs the serial port into a pipe; a keeper process (:mod:`vmanager.logkeeper`)
writes it to the log and rotates it at about 4 MiB, with the previous content in
``NAME.1``, whether or not a vmanager process is attached. This module reads
the end of the pair back (a machine attached from another process gets its
console history from it) without following symlinks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from vmanager.logkeeper import DEFAULT_LIMIT

#: Default size at which a console log is rotated.
DEFAULT_LOG_LIMIT: Final = DEFAULT_LIMIT


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
    """The log ``path`` and ``path.1``, its previous content."""

    def __init__(self, path: Path, limit: int = DEFAULT_LOG_LIMIT) -> None:
        self.path = Path(path)
        self.previous = self.path.with_name(self.path.name + ".1")
        self.limit = limit

    def history(self, limit: int) -> bytes:
        """The last ``limit`` bytes of the previous file and the log, oldest first."""
        now = read_tail(self.path, limit)
        if len(now) >= limit:
            return now
        return read_tail(self.previous, limit - len(now)) + now
