"""The guest's backdoor shell (``m.shell``): run commands, wait for them to succeed.

The guest must run vmanager's backdoor shell, as the tiny guest does. The
NixOS test driver's verbs: ``execute``, ``succeed``, ``fail``,
``wait_until_succeeds``.
"""

from __future__ import annotations

import time

from vmanager.errors import GuestCommandError
from vmanager.machine.base import State
from vmanager.machine.guest_exec import CommandVerbs
from vmanager.machine.part import MachineView, Part
from vmanager.qemu.chardev import Console, ExecResult, Shell


class GuestShell(CommandVerbs, Part):
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

    @property
    def expects_hello(self) -> bool:
        """Whether the shell is to greet (a fresh boot), not proven by a command."""
        return self._shell.expects_hello

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

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the guest's backdoor shell takes commands; return seconds since start."""
        self._vm.require(State.RUNNING, action="wait for the guest's shell")
        self._shell.wait_ready(timeout)
        return time.monotonic() - (self.started_at or time.monotonic())
