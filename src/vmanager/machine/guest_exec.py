"""``succeed``/``fail``/``wait_until_succeeds``, written once over any ``execute``.

The backdoor shell (:class:`~vmanager.machine.shell.GuestShell`) and the guest
agent's commands (:class:`~vmanager.machine.agent.GuestCommands`) each run a
command their own way; what a caller expects of the result is the same.
"""

from __future__ import annotations

import time

from vmanager.errors import GuestCommandError
from vmanager.machine.part import MachineView
from vmanager.qemu.chardev import ExecResult


class CommandVerbs:
    """The checking verbs over :meth:`execute`, which a subclass provides."""

    _vm: MachineView

    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        raise NotImplementedError

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
