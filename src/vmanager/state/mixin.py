"""The Machine's persistence hooks: its record and locks while QEMU runs.

Kept apart from :mod:`vmanager.state.persist` so the Machine can inherit it
without importing the machine package back (no import cycle).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmanager.errors import HostError, StateError
from vmanager.machine.base import MachineBase, State
from vmanager.state import records
from vmanager.state._lock import FileLock, lock_path
from vmanager.state.process import Liveness, ProcessIdentity
from vmanager.state.records import MachineRecord, Runtime

if TYPE_CHECKING:
    from vmanager.machine import Machine

_log = logging.getLogger("vmanager.state.persist")


def session_lock(name: str) -> FileLock:
    """The lock held by whichever process is connected to machine ``name``."""
    return FileLock(lock_path("session", name),
                    what=f"machine {name!r} (its monitor and consoles)")


def definition_of(machine: Machine) -> dict[str, Any]:
    """A JSON-able definition that rebuilds ``machine`` with :func:`build_machine`."""
    definition: dict[str, Any] = {
        "memory": machine.memory, "cpus": machine.cpus, "accel": machine.accel_requested,
        "cpu_model": machine.cpu_model, "machine_type": machine.machine_type,
        "kernel": str(machine.kernel) if machine.kernel else None,
        "initrd": str(machine.initrd) if machine.initrd else None,
        "append": machine.append, "extra_args": list(machine.extra_args),
        "qemu_binary": machine.qemu_binary,
        "disks": [{"path": str(d.path), "format": d.format, "interface": d.interface}
                  for d in machine.harddrives],
        "cd": str(machine.cd.path) if machine.cd is not None else None,
        "nics": getattr(machine, "_nic_count", 0),
    }
    return definition


class PersistMixin(MachineBase):
    """Keeps the machine's record in the state directory while QEMU runs.

    Hooks: ``_before_launch`` (takes the machine's lock and refuses a name whose
    QEMU already runs, before the run directory is touched), ``_after_launch``
    (writes the record, takes the session lock) and ``_teardown``.
    """

    _launch_lock: FileLock | None = None
    _session: FileLock | None = None
    _recorded_pid: int | None = None
    _detached: bool = False
    _owned_netns: str | None = None

    def _before_launch(self) -> None:
        super()._before_launch()
        lock = self._launch_lock or FileLock(lock_path("machine", self.name),
                                             what=f"machine {self.name!r}")
        lock.acquire(30.0)
        self._launch_lock = lock
        try:
            record = records.find(self.name)
            if record is not None:
                state = records.liveness(record)
                if state is Liveness.RUNNING:
                    assert record.runtime is not None
                    raise StateError(f"machine {self.name!r} is already running (pid "
                                     f"{record.runtime.pid}, started by process "
                                     f"{record.runtime.owner_pid})", state=State.RUNNING,
                                     required=State.DEFINED)
                if state is not None:
                    st = records.MachineStatus(record, state)
                    _log.warning("machine %s: replacing a stale record (%s); its pid is "
                                 "left alone", self.name, st.detail)
            session = session_lock(self.name)
            session.acquire(0)
            self._session = session
        except BaseException:
            self._release_locks()
            raise

    def _after_launch(self) -> None:
        super()._after_launch()
        pid = getattr(self, "pid", None)
        try:
            if pid is None:
                raise HostError(f"machine {self.name!r}: QEMU has no pid after start")
            identity = ProcessIdentity.of(pid)
            runtime = Runtime(pid=pid, starttime=identity.starttime, argv=identity.argv,
                              run_dir=str(self.run_dir), accel=str(getattr(self, "accel", "")),
                              started=time.time(), owner_pid=os.getpid())
            existing = records.find(self.name)
            if existing is None:
                existing = MachineRecord(self.name, definition=definition_of(self))  # type: ignore[arg-type]
            records.save(replace(existing, runtime=runtime))
            self._recorded_pid = pid
        except BaseException:
            self._release_launch_lock()
            raise
        self._release_launch_lock()

    def _teardown(self) -> None:
        try:
            super()._teardown()
        finally:
            try:
                self._forget_record()
                if self._owned_netns is not None:
                    from vmanager.state import _net
                    _net.remove_namespace(self._owned_netns)
                    self._owned_netns = None
            finally:
                self._release_locks()

    def _forget_record(self) -> None:
        pid, self._recorded_pid = self._recorded_pid, None
        if pid is None:
            return
        held = self._launch_lock is not None and self._launch_lock.held
        lock = None if held else FileLock(lock_path("machine", self.name),
                                          what=f"machine {self.name!r}").acquire(30.0)
        try:
            record = records.find(self.name)
            if record is None or record.runtime is None or record.runtime.pid != pid:
                return  # somebody else's run by now
            if record.persistent:
                records.save(replace(record, runtime=None))
            else:
                records.delete(self.name)
        finally:
            if lock is not None:
                lock.release()

    def _release_launch_lock(self) -> None:
        lock, self._launch_lock = self._launch_lock, None
        if lock is not None:
            lock.release()

    def _release_locks(self) -> None:
        self._release_launch_lock()
        session, self._session = self._session, None
        if session is not None:
            session.release()


