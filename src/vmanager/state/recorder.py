"""The Machine's recorder: its record and locks in the state directory while QEMU runs.

:class:`FileRecorder` implements :class:`vmanager.machine.recorder.Recorder`
(the interface the machine package owns), so ``machine`` never imports
``state``. It is registered as every Machine's default when
:mod:`vmanager.state` is imported (``import vmanager`` does).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmanager.errors import StateError
from vmanager.machine.base import State
from vmanager.machine.recorder import RunInfo
from vmanager.state import records
from vmanager.state.lock import FileLock, lock_path
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
    return machine.definition()


def machine_lock(name: str) -> FileLock:
    """The lock held while a machine's record is written."""
    return FileLock(lock_path("machine", name), what=f"machine {name!r}")


class FileRecorder:
    """Keeps a machine's record while its QEMU runs, and the locks that go with it.

    ``claim`` takes the machine's lock and refuses a name whose QEMU already
    runs, then takes the session lock; ``started`` writes the record (and lets
    the machine lock go); ``stopped`` removes (or, for a persistent definition,
    empties) the record and releases the session.
    """

    def __init__(self, *, session: FileLock | None = None, pid: int | None = None) -> None:
        self._launch_lock: FileLock | None = None
        self._session = session
        self._recorded_pid = pid

    def claim(self, name: str) -> None:
        """Lock the name; :class:`StateError` when its QEMU runs."""
        lock = self._launch_lock or machine_lock(name)
        lock.acquire(30.0)
        self._launch_lock = lock
        try:
            record = records.find(name)
            if record is not None:
                state = records.liveness(record)
                if state is Liveness.RUNNING:
                    assert record.runtime is not None
                    raise StateError(f"machine {name!r} is already running (pid "
                                     f"{record.runtime.pid}, started by process "
                                     f"{record.runtime.owner_pid})", state=State.RUNNING,
                                     required=State.DEFINED)
                if state is not None:
                    st = records.MachineStatus(record, state)
                    _log.warning("machine %s: replacing a stale record (%s); its pid is "
                                 "left alone", name, st.detail)
            session = session_lock(name)
            session.acquire(0)
            self._session = session
        except BaseException:
            self._release_locks()
            raise

    def started(self, info: RunInfo) -> None:
        """Write the record with the runtime part."""
        try:
            identity = ProcessIdentity.of(info.pid)
            runtime = Runtime(pid=info.pid, starttime=identity.starttime, argv=identity.argv,
                              run_dir=info.run_dir, accel=info.accel, started=time.time(),
                              owner_pid=os.getpid(), parts=dict(info.parts))
            existing = records.find(info.name)
            if existing is None:
                existing = MachineRecord(info.name, definition=dict(info.definition))
            records.save(replace(existing, runtime=runtime))
            self._recorded_pid = info.pid
        finally:
            self._release_launch_lock()

    def changed(self, info: RunInfo) -> None:
        """Store the parts' new runtime (a hot-plug) in the record."""
        if self._recorded_pid != info.pid:
            return
        with machine_lock(info.name).acquire(30.0):
            record = records.find(info.name)
            if record is None or record.runtime is None or record.runtime.pid != info.pid:
                return  # somebody else's run by now
            records.save(replace(record, runtime=replace(record.runtime,
                                                         parts=dict(info.parts))))

    def stopped(self, name: str) -> None:
        """Forget the runtime part and let go of the locks."""
        try:
            self._forget_record(name)
        finally:
            self._release_locks()

    def detached(self, name: str) -> None:
        """QEMU runs on: the record stays, the locks go."""
        self._recorded_pid = None
        self._release_locks()

    def _forget_record(self, name: str) -> None:
        pid, self._recorded_pid = self._recorded_pid, None
        if pid is None:
            return
        held = self._launch_lock is not None and self._launch_lock.held
        lock = None if held else machine_lock(name).acquire(30.0)
        try:
            record = records.find(name)
            if record is None or record.runtime is None or record.runtime.pid != pid:
                return  # somebody else's run by now
            if record.persistent:
                records.save(replace(record, runtime=None))
            else:
                records.delete(name)
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
