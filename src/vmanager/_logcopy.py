"""The log keeper process: copies its stdin into a log file it keeps bounded.

Run by :mod:`vmanager.logkeeper` as ``python -I -S _logcopy.py NAME LIMIT``
in the log's directory, with stdin the read end of a pipe. Never imported: it
uses the standard library's ``os`` and ``signal`` only, so the process stays
small (a few MiB of its own memory).

What is read is appended to ``NAME``. When ``NAME`` reaches ``LIMIT`` bytes
it becomes ``NAME.1`` (replacing the older one) and a new ``NAME`` starts:
the two files never hold more than ``2 * LIMIT`` bytes, and ``NAME.1``
followed by ``NAME`` is the end of the output, in order. The keeper
always drains the pipe, so a failing disk or a removed directory costs log
lines, never a stalled writer. It ends when every write end is closed (the
writer exited).
"""

import os
import signal
import sys

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


def _open(name: str, *, truncate: bool = False) -> int:
    try:
        return os.open(name, _FLAGS | (os.O_TRUNC if truncate else 0), 0o600)
    except OSError:
        return -1  # a symlink, a removed directory...: drop output until it works


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True


def keep(name: str, limit: int, source: int = 0) -> None:
    """Copy ``source`` into ``name`` until EOF, rotating at ``limit`` bytes."""
    fd = _open(name)
    size = os.fstat(fd).st_size if fd >= 0 else 0
    while True:
        data = os.read(source, 65536)
        if not data:
            break
        data = data[-2 * limit:]  # more could only pass through both files
        while data:
            if fd < 0:
                fd = _open(name)
                size = os.fstat(fd).st_size if fd >= 0 else 0
            if size >= limit:  # NAME becomes NAME.1; the pair reads back in order
                if fd >= 0:
                    os.close(fd)
                try:  # noqa: SIM105 - contextlib would grow the keeper
                    os.replace(name, name + ".1")
                except OSError:
                    pass
                fd = _open(name, truncate=True)
                size = 0
            piece, data = data[:limit - size], data[limit - size:]
            if fd >= 0:
                _write_all(fd, piece)  # a failed write loses the piece, never stalls
            size += len(piece)
    if fd >= 0:
        os.close(fd)


def main(argv: list[str]) -> int:
    """``NAME LIMIT``: keep NAME (in the working directory) under LIMIT bytes."""
    # a new session already; these must not end the keeper before its writer
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    if len(argv) != 2 or "/" in argv[0] or not argv[1].isdigit() or int(argv[1]) < 1:
        print("usage: _logcopy.py NAME LIMIT", file=sys.stderr)
        return 2
    keep(argv[0], int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
