"""What the Machine's feature mixins may rely on: state, QMP, launch context."""

from __future__ import annotations

import contextlib
import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager.errors import StateError

if TYPE_CHECKING:
    from vmanager.qemu.chardev import Console, ExecResult
    from vmanager.qemu.qmp import Monitor


class State(enum.Enum):
    """Lifecycle of a :class:`~vmanager.Machine`."""

    DEFINED = "defined"   # built, not started (or stopped and cleaned up)
    RUNNING = "running"
    PAUSED = "paused"     # frozen: vCPUs stopped
    STOPPED = "stopped"   # QEMU exited on its own (guest power-off or crash)


@dataclass
class LaunchContext:
    """Collects QEMU arguments and inherited fds while a machine starts.

    ``stack`` undoes whatever a hook built if the start fails later.
    """

    run_dir: Path
    accel: str
    argv: list[str] = field(default_factory=list)
    pass_fds: list[int] = field(default_factory=list)
    #: fds QEMU inherits and this process closes once QEMU has started (or failed).
    owned_fds: list[int] = field(default_factory=list)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def add(self, *args: str) -> None:
        """Append QEMU arguments."""
        self.argv.extend(args)


class MachineBase:
    """Attributes and primitives shared by the Machine and its feature mixins."""

    name: str
    log: logging.Logger
    state: State
    run_dir: Path
    console: Console
    _monitor: Monitor | None

    # -- provided by the core -----------------------------------------------------
    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        """Run a QMP command on the running machine and return its result."""
        return self._require_monitor().execute(command, arguments, timeout=timeout)

    # Declared here for the mixins; the Machine defines them.
    def start_vm(self, *, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def is_alive(self) -> bool:
        raise NotImplementedError

    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        raise NotImplementedError

    def succeed(self, command: str, timeout: float = 60.0) -> str:
        raise NotImplementedError

    def _require_monitor(self) -> Monitor:
        if self._monitor is None or self.state not in (State.RUNNING, State.PAUSED):
            raise StateError(f"machine {self.name!r} is {self.state.value}; it must be "
                             "running (start_vm() first)", state=self.state,
                             required=State.RUNNING)
        return self._monitor

    def _require_state(self, *states: State, action: str) -> None:
        if self.state not in states:
            wanted = " or ".join(s.value for s in states)
            raise StateError(f"cannot {action}: machine {self.name!r} is {self.state.value}, "
                             f"it must be {wanted}", state=self.state, required=states)

    # -- hooks the mixins override (each must call super()) ---------------------------
    def _before_launch(self) -> None:
        """Runs first in start_vm(), before the run directory is touched (locks, records)."""

    def _prepare_launch(self, ctx: LaunchContext) -> None:
        """Add QEMU arguments and fds; register undo steps on ``ctx.stack``."""

    def _after_launch(self) -> None:
        """Runs once QMP is connected (hot-plug state, event hooks)."""

    def _teardown(self) -> None:
        """Release what the mixin made, after QEMU is gone. Must be idempotent."""
