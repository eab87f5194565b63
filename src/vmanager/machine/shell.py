"""The guest's backdoor shell (``m.shell``): run commands, wait for them to succeed.

The guest must run vmanager's backdoor shell, as the tiny guest does. The
NixOS test driver's verbs: ``execute``, ``succeed``, ``fail``,
``wait_until_succeeds``.
"""

from __future__ import annotations

import time

from vmanager.errors import GuestCommandError
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.qemu.chardev import Console, ExecResult, Shell


class GuestShell(Part):
    """Commands in the guest over a virtio console."""

    key = "shell"

    def __init__(self, vm: MachineView, console: Console) -> None:
        self._vm = vm
        self.console = console
        self._shell = Shell(console)
        self.started_at: float | None = None

    def launched(self, *, greeted: bool) -> None:
        """A new QEMU: wait for the shell's hello unless the guest is already up."""
        self._shell = Shell(self.console, expect_hello=not greeted)

    def answers(self, timeout: float) -> bool:
        """Whether the backdoor shell takes commands, waiting up to ``timeout`` s (no error)."""
        try:
            self._shell.wait_ready(timeout)
        except GuestCommandError:
            return False
        return True

    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        """Run ``command`` in the guest's backdoor shell (virtio port vmanager.shell).

        Returns an :class:`ExecResult` (``status, stdout = m.execute(...)``).
        The guest must run vmanager's backdoor shell, as the tiny guest does.
        """
        self._vm.require(State.RUNNING, action="execute a command")
        return self._shell.execute(command, timeout=timeout)

    def succeed(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` in the guest and return its stdout.

        Raises :class:`GuestCommandError` (status, stdout, stderr) unless it exits 0.
        """
        result = self.execute(command, timeout=timeout)
        if result.status != 0:
            raise GuestCommandError(f"{self._vm.name}: command failed", command=command,
                                    status=result.status, output=result.stdout,
                                    stderr=result.stderr)
        return result.stdout

    def fail(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` and return its stdout; raise if it *succeeds*."""
        result = self.execute(command, timeout=timeout)
        if result.status == 0:
            raise GuestCommandError(f"{self._vm.name}: command unexpectedly succeeded",
                                    command=command, status=0, output=result.stdout)
        return result.stdout

    def wait_until_succeeds(self, command: str, timeout: float = 60.0,
                            interval: float = 0.5) -> str:
        """Retry ``command`` until it exits 0; return its stdout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            result = self.execute(command, timeout=max(1.0, left))
            if result.status == 0:
                return result.stdout
            if time.monotonic() + interval > deadline:
                raise GuestCommandError(f"{self._vm.name}: command did not succeed within "
                                        f"{timeout} s", command=command,
                                        status=result.status, output=result.stdout,
                                        stderr=result.stderr)
            time.sleep(interval)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the guest's backdoor shell takes commands; return seconds since start."""
        self._vm.require(State.RUNNING, action="wait for the guest's shell")
        self._shell.wait_ready(timeout)
        return time.monotonic() - (self.started_at or time.monotonic())
