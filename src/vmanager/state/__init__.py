"""Persistence: machine records, file locks, reattaching to running machines.

::

    state_dir()/machines/NAME.json   definition (+ runtime while QEMU runs)
    state_dir()/locks/*.lock         flock()s: machine-NAME, session-NAME, lab-NAME
    state_dir()/labs/NAME.json       what a lab made (see vmanager.lab)
    run_dir()/machines/NAME/         qmp.sock, serial0.sock/.log, shell.sock, qemu.pid, qemu.log
"""

from vmanager.machine import recorder as _recording
from vmanager.state.lock import FileLock, lock_path, locked
from vmanager.state.persist import (
    PersistentMachine,
    attach,
    build_machine,
    detach,
    machine_kwargs,
)
from vmanager.state.process import AdoptedProcess, Liveness, ProcessIdentity
from vmanager.state.recorder import FileRecorder, definition_of, session_lock
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

# Every Machine records itself here unless given another recorder.
_recording.set_default(FileRecorder, lambda name, timeout: attach(name, timeout=timeout))


__all__ = [
    "AdoptedProcess",
    "FileLock",
    "FileRecorder",
    "Liveness",
    "MachineRecord",
    "MachineStatus",
    "PersistentMachine",
    "ProcessIdentity",
    "RecordError",
    "Runtime",
    "StaleRecordError",
    "attach",
    "build_machine",
    "clear_stale",
    "definition_of",
    "detach",
    "load",
    "lock_path",
    "locked",
    "machine_kwargs",
    "require_running",
    "save",
    "session_lock",
    "status",
    "statuses",
]
