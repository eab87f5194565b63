"""A byte relay between a unix socket in a machine's run directory and standard streams.

``vmanager migrate-relay`` runs one on each server, and the orchestrating host
joins the two SSH sessions: a disk's NBD traffic crosses inside SSH with no TCP
port anywhere (see :mod:`vmanager.lab.mirror`).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import threading
from pathlib import Path

from vmanager.errors import ConfigError, NotFoundError

_SOCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,60}\.sock$")
_GO = b"\x01"  # the listening relay's first byte: a client is there, connect now
CHUNK = 1 << 20


def relay(run_dir: Path, name: str, *, listen: bool, stdin: int, stdout: int,
          timeout: float = 600.0) -> int:
    """Join a unix socket in ``run_dir`` to this process's standard streams, both ways.

    ``listen``: accept one connection on ``run_dir/name`` (made here, removed
    after), then say so with one byte on ``stdout``. Otherwise wait for that
    byte on ``stdin`` and connect to ``run_dir/name``. Returns the bytes relayed.
    """
    if not _SOCKET_NAME.match(name):
        raise ConfigError(f"bad relay socket name {name!r}")
    if not run_dir.is_dir():
        raise NotFoundError(f"{run_dir} does not exist on this server")
    path = run_dir / name
    if listen:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = run_dir / f".{name}.new"
        try:
            for old in (path, staging):
                with contextlib.suppress(FileNotFoundError):
                    if old.is_socket():
                        old.unlink()  # left by an earlier relay of ours
            # listening before the name appears: whoever waits for it never connects
            # between bind() and listen() (refused)
            listener.bind(str(staging))
            listener.listen(1)
            os.rename(staging, path)
            # the orchestrator's end going away (EOF on stdin) ends the wait too
            ready, _, _ = select.select([listener.fileno(), stdin], [], [], timeout)
            if listener.fileno() not in ready:
                return 0
            conn, _ = listener.accept()
        finally:
            listener.close()
            path.unlink(missing_ok=True)
            staging.unlink(missing_ok=True)
        conn.settimeout(None)
        os.write(stdout, _GO)
    else:
        if os.read(stdin, 1) != _GO:
            return 0  # the other end went away before anybody connected
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(path))
    counted = [0, 0]

    def outward() -> None:
        with contextlib.suppress(OSError):
            while chunk := conn.recv(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(stdout, view):]
                counted[0] += len(chunk)
        with contextlib.suppress(OSError):
            os.close(stdout)
    thread = threading.Thread(target=outward, name="vmanager-relay-out", daemon=True)
    thread.start()
    with contextlib.suppress(OSError):
        while chunk := os.read(stdin, CHUNK):
            conn.sendall(chunk)
            counted[1] += len(chunk)
    # NBD has no half-closed state: one side done means the connection is done
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    thread.join(timeout)
    conn.close()
    return counted[0] + counted[1]
