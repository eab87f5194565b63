"""Bounded logs for output vmanager does not control: QEMU's serial port, dnsmasq.

A guest (or a DHCP client) decides how much is printed, and the program
printing it may outlive every vmanager process: ``vmanager start`` leaves QEMU
running when the CLI exits. So the writer does not get a file but the write end
of a pipe, and a small keeper process (:mod:`vmanager._logcopy`, started here)
copies the pipe into ``DIRECTORY/NAME``, rotating it at ``limit`` bytes with one
previous file ``NAME.1``: at most ``2 * limit`` bytes on disk at any time, with
or without anyone attached. This is libvirt's virtlogd design, one small
process per log.

The keeper runs in a new session (a terminal's Ctrl-C or hang-up does not
reach it), in the log's directory, and ends by itself when every write end is
closed, i.e. when the writer exited. Its pid is kept in ``NAME.keeper`` so that
a later process (``vmanager stop`` of a machine another process started) can
wait for it with :func:`wait_gone` before removing the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

#: Default size at which a log is rotated.
DEFAULT_LIMIT: Final = 4 << 20
#: The script the keeper runs (stdlib only; never imported).
SCRIPT: Final = str(Path(__file__).with_name("_logcopy.py"))
#: How long a keeper may take to finish after its writer exited.
FINISH_TIMEOUT: Final = 5.0

_log = logging.getLogger(__name__)


class LogKeeper:
    """A running keeper of ``directory/name``; hand :attr:`fd` to the writer.

    Call :meth:`close_writer` once the writer has its copy (this process must
    not keep the pipe open, or the keeper never sees the end), and
    :meth:`wait` after the writer exited.
    """

    def __init__(self, directory: Path, name: str, *, limit: int = DEFAULT_LIMIT) -> None:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"log name {name!r} must be a plain file name")
        self.path = Path(directory) / name
        read_end, self.fd = os.pipe()
        try:
            with contextlib.suppress(OSError):  # room for bursts while the keeper is busy
                fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, 1 << 20)
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SCRIPT, name, str(limit)], stdin=read_end,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory,
                close_fds=True, start_new_session=True, umask=0o077)
        except BaseException:
            os.close(self.fd)
            raise
        finally:
            os.close(read_end)
        try:
            _write_pidfile(self.path, self.proc.pid)
        except OSError as exc:
            _log.warning("%s: cannot record its log keeper's pid: %s", self.path, exc)

    def close_writer(self) -> None:
        """Close this process's write end (idempotent)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def wait(self, timeout: float = FINISH_TIMEOUT) -> None:
        """Wait until the keeper wrote everything and ended (killed after ``timeout``)."""
        self.close_writer()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("%s: log keeper %d still runs %s s after its writer; killing it",
                         self.path, self.proc.pid, timeout)
            self.proc.kill()
            self.proc.wait()

    def abandon(self) -> None:
        """Let the keeper run on after this process (its writer runs on too)."""
        self.close_writer()
        self.proc.returncode = 0  # keeps Popen.__del__ quiet; PID 1 reaps it


def pidfile(log: Path) -> Path:
    """Where the pid of ``log``'s keeper is kept."""
    return log.with_name(log.name + ".keeper")


def _write_pidfile(log: Path, pid: int) -> None:
    fd = os.open(pidfile(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)


def _is_keeper_of(pid: int, log: Path) -> bool:
    """Whether ``pid`` runs our keeper script for ``log`` (argv and working directory)."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        if argv != [b""]:
            break
        time.sleep(0.01)  # a process inside execve() shows no argv for a moment
    return (argv[3:5] == [os.fsencode(SCRIPT), os.fsencode(log.name)]
            and cwd == str(log.parent.resolve()))


def wait_gone(log: Path, timeout: float = FINISH_TIMEOUT) -> None:
    """Wait for the keeper of ``log`` another process started, once its writer is gone.

    Only a process that is that keeper (its argv and working directory) is
    waited for, or killed after ``timeout``; a stale or foreign pid is ignored.
    """
    try:
        pid = int(pidfile(log).read_text().strip())
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return
    try:
        if not _is_keeper_of(pid, log):  # checked after pidfd_open: no pid reuse race
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            _log.warning("%s: log keeper %d still runs %s s after its writer; killing it",
                         log, pid, timeout)
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            poller.poll(1000)
    finally:
        os.close(pidfd)


__all__ = ["DEFAULT_LIMIT", "LogKeeper", "pidfile", "wait_gone"]
