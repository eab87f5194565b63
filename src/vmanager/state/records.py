"""Machine records: one JSON file per machine under ``state_dir()/machines``.

A record holds the machine's *definition* (how to build it again) and, while
QEMU runs, its *runtime* part (pid, start time, argv, run directory). Records
are written atomically (temporary file, ``fsync``, ``rename``) under the
machine's file lock, so a reader never sees half a file and two writers never
interleave.

*Persistent* records (``vmanager define``, lab machines) outlive the machine's
QEMU, as libvirt's defined domains do; *transient* ones (a ``Machine`` started
from a script) disappear when the machine stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vmanager import logkeeper, paths, validate
from vmanager.errors import NotFoundError, StateError, VmanagerError
from vmanager.state.lock import locked
from vmanager.state.process import Liveness, ProcessIdentity, read_pidfile

FORMAT_VERSION = 1


class StaleRecordError(StateError):
    """A record says a machine runs, but its QEMU is gone or its pid was reused.

    vmanager never signals such a pid; ``vmanager clean NAME`` (or
    :func:`clear_stale`) drops the runtime part after checking again.
    """

    def __init__(self, message: str, *, name: str, liveness: Liveness,
                 pid: int | None) -> None:
        super().__init__(message, state=liveness)
        self.name = name
        self.liveness = liveness
        self.pid = pid


class RecordError(VmanagerError):
    """A record file that cannot be read (corrupt JSON, unknown version)."""


@dataclass(frozen=True)
class Runtime:
    """The running QEMU of a machine."""

    pid: int
    starttime: int
    argv: tuple[str, ...]
    run_dir: str
    accel: str
    started: float  #: wall-clock time (``time.time()``) of the start
    owner_pid: int  #: the process that started it
    #: each part's runtime (NIC ids, hot-plugged devices...) for a whole reattach
    parts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> ProcessIdentity:
        """What identifies the QEMU process."""
        return ProcessIdentity(self.pid, self.argv, self.starttime)


@dataclass(frozen=True)
class MachineRecord:
    """A machine vmanager knows about."""

    name: str
    definition: Mapping[str, Any] = field(default_factory=dict)
    persistent: bool = False
    lab: str | None = None
    runtime: Runtime | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as written to disk."""
        data = asdict(self)
        data["definition"] = dict(self.definition)
        data["version"] = FORMAT_VERSION
        if self.runtime is not None:
            data["runtime"]["argv"] = list(self.runtime.argv)
            data["runtime"]["parts"] = dict(self.runtime.parts)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, path: Path) -> MachineRecord:
        """Parse what :meth:`to_json` wrote; :class:`RecordError` when it cannot."""
        try:
            if data.get("version") != FORMAT_VERSION:
                raise RecordError(f"{path}: unknown record version {data.get('version')!r}")
            rt = data.get("runtime")
            runtime = None
            if rt is not None:
                runtime = Runtime(pid=int(rt["pid"]), starttime=int(rt["starttime"]),
                                  argv=tuple(str(a) for a in rt["argv"]),
                                  run_dir=str(rt["run_dir"]), accel=str(rt["accel"]),
                                  started=float(rt["started"]), owner_pid=int(rt["owner_pid"]),
                                  parts=_parts(rt.get("parts")))
            return cls(name=validate.name(data["name"], what="machine name"),
                       definition=dict(data.get("definition") or {}),
                       persistent=bool(data.get("persistent", False)),
                       lab=data.get("lab"), runtime=runtime)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{path}: malformed machine record: {exc}") from exc


@dataclass(frozen=True)
class MachineStatus:
    """A record together with what became of its process (``vmanager list``)."""

    record: MachineRecord
    liveness: Liveness | None  #: ``None`` when the machine is not started

    @property
    def name(self) -> str:
        """The machine's name."""
        return self.record.name

    @property
    def state(self) -> str:
        """``running``, ``defined`` (not started) or ``stale`` (see :attr:`detail`)."""
        if self.liveness is None:
            return "defined"
        return "running" if self.liveness is Liveness.RUNNING else "stale"

    @property
    def pid(self) -> int | None:
        """The recorded QEMU pid."""
        return self.record.runtime.pid if self.record.runtime else None

    @property
    def detail(self) -> str:
        """A sentence on a stale record, else ``""``."""
        if self.liveness is Liveness.EXITED:
            return f"QEMU (pid {self.pid}) is gone"
        if self.liveness is Liveness.REUSED:
            return f"pid {self.pid} now belongs to another program"
        return ""

    def to_json(self) -> dict[str, Any]:
        """A summary for ``--json`` output."""
        rt = self.record.runtime
        return {"name": self.name, "state": self.state, "pid": self.pid,
                "lab": self.record.lab, "persistent": self.record.persistent,
                "accel": rt.accel if rt else None, "detail": self.detail,
                "uptime": round(time.time() - rt.started, 1) if rt and
                self.liveness is Liveness.RUNNING else None,
                "memory": self.record.definition.get("memory"),
                "cpus": self.record.definition.get("cpus")}


def _parts(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"runtime parts must be an object, got {type(value).__name__}")
    return dict(value)


def records_dir() -> Path:
    """Where machine records live."""
    return paths.private_dir(paths.state_dir() / "machines")


def record_path(name: str) -> Path:
    """The record file of machine ``name``."""
    return records_dir() / f"{validate.name(name, what='machine name')}.json"


def _read(path: Path) -> MachineRecord:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: cannot read machine record: {exc}") from exc
    if not isinstance(data, dict):
        raise RecordError(f"{path}: a machine record must be a JSON object")
    return MachineRecord.from_json(data, path=path)


def load(name: str) -> MachineRecord:
    """The record of machine ``name``; :class:`NotFoundError` when there is none."""
    path = record_path(name)
    try:
        return _read(path)
    except FileNotFoundError:
        raise NotFoundError(f"no machine named {name!r} (no record in {path.parent})") from None


def find(name: str) -> MachineRecord | None:
    """Like :func:`load`, ``None`` instead of raising when there is no record."""
    try:
        return load(name)
    except NotFoundError:
        return None


def save(record: MachineRecord) -> None:
    """Write ``record`` atomically. Callers hold the machine's lock."""
    path = record_path(record.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def delete(name: str) -> None:
    """Remove the record of machine ``name`` (nothing if there is none)."""
    record_path(name).unlink(missing_ok=True)


def iter_records() -> Iterator[MachineRecord | RecordError]:
    """Every record, sorted by name; unreadable ones are yielded as the error."""
    for path in sorted(records_dir().glob("*.json")):
        try:
            yield _read(path)
        except FileNotFoundError:
            continue  # removed while we listed
        except RecordError as exc:
            yield exc


def liveness(record: MachineRecord) -> Liveness | None:
    """What became of the record's QEMU (``None``: not started).

    The pidfile QEMU wrote, when it is still there, must agree with the record.
    """
    rt = record.runtime
    if rt is None:
        return None
    pidfile = read_pidfile(Path(rt.run_dir) / "qemu.pid")
    if pidfile is not None and pidfile != rt.pid:
        return Liveness.REUSED
    return rt.identity.check()


def status(record: MachineRecord) -> MachineStatus:
    """The record with its liveness."""
    return MachineStatus(record, liveness(record))


def statuses() -> list[MachineStatus]:
    """The status of every readable record."""
    return [status(r) for r in iter_records() if isinstance(r, MachineRecord)]


def require_running(name: str) -> MachineRecord:
    """The record of a machine whose QEMU runs.

    Raises:
        NotFoundError: no record.
        StateError: the machine is not started.
        StaleRecordError: the process is gone or its pid was reused.
    """
    record = load(name)
    state = liveness(record)
    if state is None:
        raise StateError(f"machine {name!r} is not running (start it first)",
                         state="defined", required="running")
    if state is not Liveness.RUNNING:
        st = MachineStatus(record, state)
        raise StaleRecordError(f"machine {name!r} has a stale record: {st.detail}; "
                               f"'vmanager clean {name}' removes it", name=name,
                               liveness=state, pid=st.pid)
    return record


def clear_stale(name: str) -> MachineStatus:
    """Drop the runtime part of a stale record (and its run directory).

    Re-checks under the lock; touches no process. A transient record is
    removed altogether. Raises :class:`StateError` when the machine runs.
    """
    with locked("machine", name):
        st = status(load(name))
        if st.state == "running":
            raise StateError(f"machine {name!r} is running (pid {st.pid}); it is not stale",
                             state="running")
        rt = st.record.runtime
        if rt is not None:
            run_dir = Path(rt.run_dir)
            if run_dir.name == name and run_dir.parent.name == "machines":
                logkeeper.wait_gone(run_dir / "serial0.log")  # QEMU is gone: it ends
                _remove_tree(run_dir)
        if st.record.persistent:
            save(replace(st.record, runtime=None))
        else:
            delete(name)
        return st


def _remove_tree(path: Path) -> None:
    import shutil
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
