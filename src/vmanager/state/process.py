"""Processes vmanager did not start itself: identity checks and an adopted handle.

A pid alone is not an identity: after QEMU exits the kernel may give its pid
to any other program. As Proxmox does, a recorded pid is trusted only when
``/proc/<pid>/cmdline`` is the argv vmanager recorded; vmanager also compares the
process's start time (``/proc/<pid>/stat`` field 22), which no reuse can match.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass

from vmanager.errors import HostError


class Liveness(enum.Enum):
    """What became of a recorded process."""

    RUNNING = "running"  #: the pid runs the recorded argv, started at the recorded time
    EXITED = "exited"    #: no such process any more
    REUSED = "reused"    #: the pid now belongs to another program


@dataclass(frozen=True)
class ProcessIdentity:
    """What identifies one process beyond its pid."""

    pid: int
    argv: tuple[str, ...]
    starttime: int  #: clock ticks after boot (``/proc/<pid>/stat`` field 22)

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """Read the identity of a running process.

        Raises :class:`HostError` when it does not exist (or is a zombie).
        """
        argv = read_cmdline(pid)
        start = read_starttime(pid)
        if argv is None or start is None:
            raise HostError(f"process {pid} does not exist")
        return cls(pid, tuple(argv), start)

    def check(self) -> Liveness:
        """Whether the process still runs and is still the same program."""
        start = read_starttime(self.pid)
        if start is None:
            return Liveness.EXITED
        argv = read_cmdline(self.pid)
        if argv is None:
            return Liveness.EXITED
        if start != self.starttime or tuple(argv) != self.argv:
            return Liveness.REUSED
        return Liveness.RUNNING


def read_cmdline(pid: int) -> list[str] | None:
    """``/proc/<pid>/cmdline`` as an argv list, or ``None`` if the process is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [part.decode(errors="surrogateescape") for part in raw.split(b"\0")[:-1]]


def read_starttime(pid: int) -> int | None:
    """The start time of a live (non-zombie) process, or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state); starttime is field 22
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def read_pidfile(path: os.PathLike[str] | str) -> int | None:
    """The pid in a pidfile, or ``None`` if it is missing or garbled."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class AdoptedProcess:
    """A process another vmanager process started, driven like a ``Popen``.

    It offers the part of :class:`subprocess.Popen` the Machine uses (``pid``,
    ``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``). Signals go
    through a pidfd opened once the identity was verified, so they can never
    reach a process that later takes over the pid. A process that is not our
    child has no exit status to collect: it is reported as ``-1``.

    Raises :class:`HostError` when the process is gone or is not ``identity``.
    """

    def __init__(self, identity: ProcessIdentity) -> None:
        self.pid = identity.pid
        self.args = list(identity.argv)
        self.returncode: int | None = None
        self._identity = identity
        try:
            self._pidfd: int | None = os.pidfd_open(identity.pid)
        except OSError as exc:
            raise HostError(f"process {identity.pid} is gone: {exc.strerror}") from exc
        # Checked after opening the pidfd: from here on the fd pins this process.
        if identity.check() is not Liveness.RUNNING:
            self.close()
            raise HostError(f"process {identity.pid} is no longer {identity.argv[0]}")

    def __repr__(self) -> str:
        return f"<AdoptedProcess pid={self.pid} returncode={self.returncode}>"

    def close(self) -> None:
        """Close the pidfd; idempotent."""
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def poll(self) -> int | None:
        """The exit status once the process ended (``-1``: not our child), else ``None``."""
        if self.returncode is not None:
            return self.returncode
        fd = self._pidfd
        if fd is None:
            return self.returncode
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            return None
        self.returncode = self._collect()
        self.close()
        return self.returncode

    def _collect(self) -> int:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        if pid == 0:
            return -1
        return os.waitstatus_to_exitcode(status)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; :class:`subprocess.TimeoutExpired` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.poll()
            if status is not None:
                return status
            fd = self._pidfd
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            if fd is not None:
                select.select([fd], [], [], 1.0 if left is None else min(left, 1.0))

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` through the pidfd (nothing happens once the process ended)."""
        fd = self._pidfd
        if fd is None or self.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)
