"""The QEMU process of a Machine: spawn it with its sockets, connect, stop it with escalation.

Kept apart from the Machine so its lifecycle reads as a sequence of steps;
nothing here knows about parts. A forceful stop is ``quit`` -> SIGKILL, a
graceful one the ACPI power button; both always reap.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vmanager import paths
from vmanager.errors import QemuError, QemuStartError, ShutdownTimeout, StateError
from vmanager.qemu import launch
from vmanager.qemu.chardev import Console
from vmanager.qemu.qmp import Monitor

#: Files and sockets in a machine's run directory.
QMP_SOCKET = "qmp.sock"
SERIAL_SOCKET = "serial0.sock"
SHELL_SOCKET = "shell.sock"
SERIAL_LOG = "serial0.log"
#: Size at which the serial log is rotated (one previous file is kept).
SERIAL_LOG_LIMIT = 4 << 20
QEMU_LOG = "qemu.log"
PIDFILE = "qemu.pid"


class Process(Protocol):
    """The part of :class:`subprocess.Popen` a Machine uses (an adopted process has it too)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None:
        """The exit status, or ``None`` while it runs."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end."""

    def send_signal(self, sig: int) -> None:
        """Send a signal."""

    def kill(self) -> None:
        """SIGKILL."""


def open_run_dir(name: str, run_dir: Path) -> list[socket.socket]:
    """A fresh owner-only run directory with QEMU's QMP, serial and shell sockets listening.

    Refuses (:class:`StateError`) a directory a live QEMU still owns.
    """
    paths.private_dir(run_dir.parent)
    other = launch.owner_pid(run_dir)
    if other is not None:
        raise StateError(f"machine {name!r} is already running as pid {other} (started "
                         "elsewhere; Machine.attach() reaches it)", state="running",
                         required="defined")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    paths.private_dir(run_dir)
    listeners: list[socket.socket] = []
    try:
        for sock in (QMP_SOCKET, SERIAL_SOCKET, SHELL_SOCKET):
            listeners.append(launch.listen_unix(run_dir / sock))
    except BaseException:
        for listener in listeners:
            listener.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return listeners


def spawn(name: str, argv: list[str], *, run_dir: Path, pass_fds: list[int],
          log: logging.Logger) -> subprocess.Popen[bytes]:
    """Run QEMU with ``argv`` (its output to ``qemu.log``, owner-only files)."""
    log_path = run_dir / QEMU_LOG
    with log_path.open("wb") as logf:
        os.chmod(log_path, 0o600)
        log.debug("argv: %s", argv)
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                pass_fds=pass_fds, start_new_session=True, close_fds=True, umask=0o077)
        except OSError as exc:
            raise QemuStartError(f"{name}: could not execute {argv[0]}: {exc}",
                                 argv=argv) from exc


def connect(name: str, proc: Process, argv: list[str], *, run_dir: Path, console: Console,
            shell_console: Console, timeout: float, log: logging.Logger,
            history: bytes = b"") -> Monitor:
    """Connect the consoles, then QMP; :class:`QemuStartError` with QEMU's log on failure."""
    try:
        # Consoles first: QEMU waits (wait=on) for them before it runs the guest.
        console.attach(launch.connect_unix(run_dir / SERIAL_SOCKET), history=history,
                       log=run_dir / SERIAL_LOG)  # bounded by its log keeper
        shell_console.attach(launch.connect_unix(run_dir / SHELL_SOCKET))
        monitor = Monitor(name, logger=log)
        monitor.connect(str(run_dir / QMP_SOCKET), timeout=timeout)
        return monitor
    except (QemuError, OSError) as exc:
        status = proc.poll()
        if status is None:
            time.sleep(0.2)
            status = proc.poll()
        raise QemuStartError(
            f"{name}: QEMU " + (f"exited with status {status}" if status is not None
                                else "did not answer on QMP") + " while starting",
            argv=argv, log_tail=launch.log_tail(run_dir / QEMU_LOG),
            returncode=status) from exc


def quit_and_reap(proc: Process, monitor: Monitor | None, *, grace: float,
                  log: logging.Logger) -> None:
    """QMP ``quit`` (QEMU flushes its caches and exits), reaping within ``grace`` s.

    The caller kills whatever is left.
    """
    deadline = time.monotonic() + grace
    if monitor is not None:
        try:
            monitor.execute("quit", timeout=grace / 2)
        except QemuError as exc:  # the answer may be lost as QEMU exits
            log.debug("quit: %s", exc)
    if launch.reap(proc, timeout=max(0.0, deadline - time.monotonic())) is None:
        log.warning("QEMU did not exit within %s s of quit; killing it", grace)


def power_off(name: str, proc: Process, monitor: Monitor, *, paused: bool, timeout: float,
              log: logging.Logger, request: Callable[[], None] | None = None) -> int:
    """Press the ACPI power button and wait up to ``timeout`` s for QEMU to exit.

    ``request`` asks the guest some other way instead (its guest agent).
    Raises :class:`ShutdownTimeout` when the guest does not power off in time.
    """
    if paused:
        monitor.execute("cont", timeout=5)
    if request is not None:
        request()
        how = "the guest agent's shutdown"
    else:
        how = "the ACPI power button (does the guest handle ACPI?)"
        try:
            monitor.execute("system_powerdown", timeout=5)
        except QemuError as exc:
            if proc.poll() is None:
                raise
            log.debug("system_powerdown: %s", exc)  # it exited meanwhile
    status = launch.reap(proc, timeout=timeout)
    if status is None:
        raise ShutdownTimeout(
            f"machine {name!r} did not power off within {timeout} s of {how}; it is still "
            "running: stop() ends it by force", machine=name, timeout=timeout)
    log.info("powered off (QEMU exit status %s)", status)
    return status
