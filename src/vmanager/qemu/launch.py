"""Starting a QEMU process: listening sockets handed over as fds, logs, reaping.

vmanager binds each unix socket itself (mode 0600, in a 0700 run directory),
passes the listening fd to QEMU and connects at once: the connection waits in
the backlog until QEMU accepts it, so there is no polling for sockets to
appear and nothing the guest prints early is lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Protocol

from vmanager.errors import HostError


class Waitable(Protocol):
    """A process handle: :class:`subprocess.Popen` or one adopted from another process."""

    def poll(self) -> int | None:
        """The exit status, or ``None`` while it runs."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end (:class:`subprocess.TimeoutExpired` after ``timeout``)."""

    def send_signal(self, sig: int) -> None:
        """Send a signal."""

QEMU_BINARY = "qemu-system-x86_64"


def find_qemu(binary: str | None = None) -> str:
    """The QEMU system emulator to run; :class:`HostError` names it when missing."""
    name = binary or os.environ.get("VMANAGER_QEMU") or QEMU_BINARY
    found = shutil.which(name)
    if found is None:
        raise HostError(f"{name} is not installed or not on PATH; install Debian's "
                        "qemu-system-x86 package (scripts/setup does)")
    return found


def listen_unix(path: Path) -> socket.socket:
    """Bind and listen on a unix socket at ``path``, readable by the owner only."""
    if path.exists() or path.is_symlink():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(8)
    sock.set_inheritable(True)
    return sock


def connect_unix(path: Path, *, timeout: float = 10.0) -> socket.socket:
    """Connect to a unix socket (the backlog makes this immediate after listen)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, or '' if there is none."""
    from vmanager.qemu.logrotate import read_tail
    data = read_tail(path, 16384)
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def reap(proc: Waitable, *, timeout: float) -> int | None:
    """Wait up to ``timeout`` s for ``proc``; return its status or None if still alive."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def kill_and_reap(proc: Waitable) -> int:
    """SIGKILL ``proc`` and wait for it (always reaps)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
    return proc.wait()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def owner_pid(run_dir: Path) -> int | None:
    """The pid of a live QEMU that owns ``run_dir`` (its pidfile), else None.

    The pid counts only if that process's argv names ``run_dir``, so a pid the
    kernel reused for another program is not mistaken for the machine.
    """
    try:
        pid = int((run_dir / "qemu.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    # the argv must name this run directory's pidfile exactly: a substring test
    # would take machines/web-2 for machines/web
    if str(run_dir / "qemu.pid").encode() in cmdline.split(b"\0") and pid_alive(pid):
        return pid
    return None
