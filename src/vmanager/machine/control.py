"""The seed's whole-machine calls of a Machine: freeze, status, the human monitor, send."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vmanager.errors import ConfigError, QemuError, StateError
from vmanager.machine.base import State
from vmanager.qemu import launch
from vmanager.screen import keys

if TYPE_CHECKING:
    from vmanager.machine.input import Input
    from vmanager.machine.process import Process
    from vmanager.qemu.qmp import Monitor


class ControlVerbs:
    """Run state and monitor commands; the Machine defines the attributes declared here."""

    name: str
    state: State
    log: logging.Logger
    input: Input
    _proc: Process | None

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        raise NotImplementedError

    def _require_monitor(self) -> Monitor:
        raise NotImplementedError

    def _require_state(self, *states: State, action: str) -> None:
        raise NotImplementedError

    # -- the whole machine --------------------------------------------------------------
    def freeze(self) -> None:
        """Pause the guest's CPUs (QMP ``stop``)."""
        self._require_state(State.RUNNING, State.PAUSED, action="freeze")
        self.qmp("stop")
        self.state = State.PAUSED

    def unfreeze(self) -> None:
        """Resume a frozen guest (QMP ``cont``)."""
        self._require_state(State.RUNNING, State.PAUSED, action="unfreeze")
        self.qmp("cont")
        self.state = State.RUNNING

    def status(self) -> str:
        """QEMU's run state (``running``, ``paused``, ``shutdown``...)."""
        return str(self.qmp("query-status")["status"])

    def wait_for_shutdown(self, timeout: float = 60.0) -> int:
        """Wait for QEMU to exit by itself (e.g. the guest powered off); return its status."""
        proc = self._proc
        if proc is None:
            raise StateError(f"machine {self.name!r} is not running", state=self.state)
        status = launch.reap(proc, timeout=timeout)
        if status is None:
            raise QemuError(f"{self.name}: still running after {timeout} s")
        self.state = State.STOPPED
        return status

    def send(self, data: str | bytes, *, timeout: float = 60.0) -> str:
        """The seed's ``send``: ``bytes`` is a key combination, ``str`` a monitor command.

        The type decides, never the text: ``m.send(b"ctrl-alt-f2")`` presses
        those keys (switching to tty2 on a Unix guest) and returns ``""``, as
        :meth:`send_key` does; ``m.send("stop")`` runs the human monitor command
        ``stop`` (the VM pauses) and returns its output, as :meth:`monitor` does.
        After a monitor command :attr:`state` follows what it did (``stop``,
        ``cont``, ``quit``).

        Raises:
            ConfigError: ``bytes`` that are not a key combination of QEMU key
                names (the message lists them), or neither bytes nor str.
            StateError: the machine is not running.
            QMPError: QEMU refused.
        """
        if isinstance(data, bytes):
            try:
                combo = data.decode("ascii")
                keys.parse_combo(combo)
            except (UnicodeDecodeError, ConfigError) as exc:
                raise ConfigError(f"send({data!r}): bytes are a key combination such as "
                                  f"b'ctrl-alt-f2', and this is not one ({exc}); pass a str "
                                  "to run a monitor command") from exc
            self.input.send_key(combo, hold_ms=100)
            return ""
        if not isinstance(data, str):
            raise ConfigError(f"send() takes bytes (a key combination) or a str (a monitor "
                              f"command), got {type(data).__name__}")
        return self.monitor(data, timeout=timeout)

    def monitor(self, command_line: str, *, timeout: float = 60.0) -> str:
        """Run a human monitor command (``info block``...) and return its output.

        :attr:`state` follows what the command did: after ``stop`` the machine
        is paused, after ``cont`` running, after ``quit`` stopped.
        """
        if not isinstance(command_line, str):
            raise ConfigError(f"a monitor command is a str, got {type(command_line).__name__}")
        monitor = self._require_monitor()
        try:
            return monitor.hmp(command_line, timeout=timeout)
        finally:
            self._follow_run_state()

    def _follow_run_state(self) -> None:
        """Bring :attr:`state` in line with QEMU after a monitor command changed it."""
        proc = self._proc
        if proc is None or self.state not in (State.RUNNING, State.PAUSED):
            return
        try:
            running = bool(self._require_monitor().execute("query-status", timeout=5)["running"])
        except QemuError as exc:
            # "quit": QEMU is going away; is_alive() and stop() take it from here
            if launch.reap(proc, timeout=1.0) is not None:
                self.state = State.STOPPED
            self.log.debug("query-status after a monitor command: %s", exc)
            return
        self.state = State.RUNNING if running else State.PAUSED
