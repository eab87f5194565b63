"""The narrow view of a Machine its parts get (:class:`~vmanager.machine.part.MachineView`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager.errors import QemuError

if TYPE_CHECKING:
    from vmanager.machine.base import State
    from vmanager.machine.machine import Machine
    from vmanager.qemu.qmp import Monitor


class View:
    """Name, logger, run directory, state and QMP of one Machine; nothing else."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    @property
    def name(self) -> str:
        """The machine's name."""
        return self._machine.name

    @property
    def log(self) -> logging.Logger:
        """The machine's logger."""
        return self._machine.log

    @property
    def run_dir(self) -> Path:
        """The machine's private run directory."""
        return self._machine.run_dir

    @property
    def state(self) -> State:
        """The machine's lifecycle state."""
        return self._machine.state

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        """Run a QMP command; :class:`StateError` unless the machine runs."""
        return self._machine.qmp(command, arguments, timeout=timeout)

    def monitor(self) -> Monitor:
        """The QMP client; :class:`StateError` unless the machine runs."""
        return self._machine._require_monitor()

    def require(self, *states: State, action: str) -> None:
        """:class:`StateError` naming ``action`` unless in one of ``states``."""
        self._machine._require_state(*states, action=action)

    def quiet(self, command: str, arguments: dict[str, Any]) -> None:
        """A best-effort clean-up QMP command: failure is logged, not raised."""
        try:
            self._machine.qmp(command, arguments)
        except QemuError as exc:
            self._machine.log.debug("%s %s: %s", command, arguments, exc)

    def changed(self) -> None:
        """A part's runtime changed: the recorder hears of it."""
        self._machine._changed()
