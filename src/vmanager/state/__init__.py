"""Persistence: machine records, file locks, reattaching to running machines.

::

    state_dir()/machines/NAME.json   definition (+ runtime while QEMU runs)
    state_dir()/locks/*.lock         flock()s: machine-NAME, session-NAME, lab-NAME
    state_dir()/labs/NAME.json       what a lab made (see vmanager.lab)
    run_dir()/machines/NAME/         qmp.sock, serial0.sock/.log, shell.sock, qemu.pid, qemu.log
"""

from typing import Any

from vmanager.state._lock import FileLock, lock_path, locked
from vmanager.state.mixin import PersistMixin, definition_of, session_lock
from vmanager.state.process import AdoptedProcess, Liveness, ProcessIdentity
from vmanager.state.records import (
    MachineRecord,
    MachineStatus,
    RecordError,
    Runtime,
    StaleRecordError,
    clear_stale,
    load,
    require_running,
    save,
    status,
    statuses,
)

_PERSIST = ("PersistentMachine", "attach", "build_machine", "detach", "machine_kwargs")


def __getattr__(name: str) -> Any:
    # persist imports the Machine, which imports this package: load it on first use.
    if name in _PERSIST:
        from vmanager.state import persist
        return getattr(persist, name)
    raise AttributeError(f"module 'vmanager.state' has no attribute {name!r}")


__all__ = [
    "AdoptedProcess", "FileLock", "Liveness", "MachineRecord", "MachineStatus",
    "PersistMixin", "PersistentMachine", "ProcessIdentity", "RecordError", "Runtime",
    "StaleRecordError", "attach", "build_machine", "clear_stale", "definition_of", "detach",
    "load", "lock_path", "locked", "machine_kwargs", "require_running", "save",
    "session_lock", "status", "statuses",
]
