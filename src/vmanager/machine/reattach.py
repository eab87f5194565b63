"""Another process's machine: take over a running QEMU, or let go of one.

:meth:`Machine.reconnect` (what ``Machine.attach`` ends with) connects to the
QEMU a record describes and lets every part restore its runtime, so the
machine is whole; :meth:`Machine.detach` releases everything without removing
it, leaving QEMU running for the next attach.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager.errors import StateError
from vmanager.machine import process
from vmanager.machine.base import State

if TYPE_CHECKING:
    from vmanager.machine.machine import Machine
    from vmanager.machine.recorder import RunInfo


def reconnect(m: Machine, run: RunInfo, proc: process.Process, *, timeout: float,
              history: bytes, started: float | None) -> None:
    """See :meth:`Machine.reconnect`."""
    if m.state is not State.DEFINED or m._proc is not None:
        raise StateError(f"machine {m.name!r} is {m.state.value}; only a defined "
                         "machine object can reconnect", state=m.state,
                         required=State.DEFINED)
    m.run_dir = Path(run.run_dir)
    m.argv = list(run.argv)
    m.accel = run.accel
    m._proc = proc
    try:
        m._monitor = process.connect(
            m.name, proc, m.argv, run_dir=m.run_dir, console=m.console,
            shell_console=m.shell.console, timeout=timeout, log=m.log,
            history=history)
        m.shell.launched(greeted=True)
        m.state = State.RUNNING
        if str(m.qmp("query-status", timeout=timeout)["status"]) == "paused":
            m.state = State.PAUSED
        for part in m._parts():
            part.restore(_mapping(run.parts.get(part.key)))
    except BaseException:
        for part in m._parts():
            part.release()
        m._disconnect()
        m.state = State.DEFINED
        raise
    m.shell.started_at = started
    m._owns_run_dir = True  # stop()/kill() from here remove it
    m._recording = True


def detach(m: Machine) -> None:
    """See :meth:`Machine.detach`."""
    m._require_state(State.RUNNING, State.PAUSED, action="detach")
    if m._recording:
        m._recorder.changed(m.run_info())
    proc = m._disconnect()
    close = getattr(proc, "close", None)
    if callable(close):
        close()
    elif proc is not None:
        proc.returncode = 0  # keeps Popen.__del__ from warning; the process runs on
    keeper, m._log_keeper = m._log_keeper, None
    if keeper is not None:
        keeper.abandon()  # it keeps the serial log bounded while QEMU runs on
    # The machine's NICs and namespace outlive this process with QEMU; whoever
    # attaches and stops it removes them.
    for part in m._parts():
        part.release()
    m._detached = True
    m.state = State.DEFINED
    m._recording = False
    m._recorder.detached(m.name)
    m.log.info("detached; QEMU keeps running (pid %s)", getattr(proc, "pid", None))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
