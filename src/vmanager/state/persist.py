"""Machines that outlive the process that started them.

:class:`PersistMixin` writes the machine's record when QEMU is up and removes
(or, for a persistent definition, empties) it when the machine is torn down.
:func:`attach` builds a :class:`~vmanager.Machine` for a machine another process
started: QMP, consoles (with history from ``serial0.log``), the backdoor shell
and everything built on QMP work again. :func:`detach` lets a machine go on
running after this process lets go of it.

One process at a time talks to a machine: QEMU's sockets take one client each.
The *session lock* (``locks/session-NAME.lock``) says who; :func:`attach`
waits for it and then names the holder if it never comes free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmanager import paths
from vmanager.errors import HostError, QemuError, StateError, VmanagerError
from vmanager.machine import Machine, State
from vmanager.machine.base import MachineBase
from vmanager.qemu import launch
from vmanager.qemu.chardev import Shell
from vmanager.qemu.qmp import Monitor
from vmanager.state import records
from vmanager.state._lock import FileLock, lock_path
from vmanager.state.process import AdoptedProcess, Liveness, ProcessIdentity
from vmanager.state.records import MachineRecord, Runtime, StaleRecordError

_log = logging.getLogger(__name__)


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


def machine_kwargs(name: str, definition: Mapping[str, Any], *,
                   for_attach: bool = False) -> dict[str, Any]:
    """Keyword arguments for :class:`Machine` from a record's definition.

    ``guest = "tiny"`` boots the tiny guest (built on first use). With
    ``for_attach`` nothing that is only needed to start QEMU is resolved (kernel
    files, the tiny guest), since the machine already runs.
    """
    from vmanager.storage import CD, Harddrive
    kw: dict[str, Any] = {}
    for key in ("memory", "cpus", "accel", "machine_type", "qemu_binary"):
        if definition.get(key) is not None:
            kw[key] = definition[key]
    if not for_attach:
        if definition.get("guest") == "tiny":
            from vmanager.guests import tiny_guest
            kw.update(tiny_guest().machine_args(name))
        for key in ("kernel", "initrd", "append", "cpu_model"):
            if definition.get(key) is not None:
                kw[key] = definition[key]
        if definition.get("extra_args"):
            kw["extra_args"] = list(definition["extra_args"])
        if definition.get("cd"):
            kw["cd"] = CD(definition["cd"])
    disks = []
    for disk in definition.get("disks") or ():
        drive = Harddrive(disk["path"], format=disk.get("format", "qcow2"),
                          interface=disk.get("interface", "virtio"), size=disk.get("size"))
        if not for_attach and not drive.exists and disk.get("size"):
            drive.create()
        disks.append(drive)
    if disks:
        kw["harddrives"] = disks
    nics = definition.get("nics")
    if isinstance(nics, int) and nics and not for_attach:
        kw["nics"] = nics
    return kw


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
                assert isinstance(self, Machine)
                existing = MachineRecord(self.name, definition=definition_of(self))
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


class PersistentMachine(PersistMixin, Machine):
    """A :class:`Machine` that keeps a record, can be attached to and detached from.

    Until the core calls ``_before_launch`` itself and has :class:`PersistMixin`
    among its bases, this subclass does both.
    """

    def start_vm(self, *, timeout: float = 30.0) -> None:
        """Start QEMU (see :meth:`Machine.start_vm`) and write the machine's record."""
        if self._detached:
            raise StateError(f"machine {self.name!r} was detached from this process; "
                             "attach to it instead", state="detached")
        if not self.is_alive():
            self._before_launch()
        super().start_vm(timeout=timeout)

    def _cleanup(self) -> None:
        if self._detached:
            return  # the run directory belongs to the running QEMU, not to us
        super()._cleanup()

    @classmethod
    def attach(cls, name: str, *, timeout: float = 10.0) -> PersistentMachine:
        """Attach to the running machine ``name``; see :func:`attach`."""
        return attach(name, timeout=timeout)

    def detach(self) -> None:
        """Let the machine go on running without this process; see :func:`detach`."""
        detach(self)


def build_machine(record: MachineRecord, *, for_attach: bool = False) -> PersistentMachine:
    """A (not yet started) machine object from a record's definition."""
    kwargs = machine_kwargs(record.name, record.definition, for_attach=for_attach)
    return PersistentMachine(record.name, **kwargs)


def attach(name: str, *, timeout: float = 10.0) -> PersistentMachine:
    """Reattach to machine ``name``, started by this or another process.

    Waits up to ``timeout`` s for another process connected to it to let go.
    The machine's console keeps what QEMU logged before (``serial0.log``).

    >>> m = attach("web")            # doctest: +SKIP
    >>> m.succeed("uname -r"); m.detach()

    Raises:
        NotFoundError: no such machine.
        StateError: not running, or busy in another process.
        StaleRecordError: its QEMU is gone or its pid was reused (never signalled).
    """
    records.require_running(name)
    session = session_lock(name)
    session.acquire(timeout)
    machine: PersistentMachine | None = None
    proc: AdoptedProcess | None = None
    try:
        record = records.require_running(name)  # again, now that we hold the session
        runtime = record.runtime
        assert runtime is not None
        try:
            proc = AdoptedProcess(runtime.identity)
        except HostError as exc:
            raise StaleRecordError(f"machine {name!r}: {exc}", name=name,
                                   liveness=Liveness.EXITED, pid=runtime.pid) from exc
        try:
            machine = build_machine(record, for_attach=True)
        except VmanagerError as exc:
            _log.warning("machine %s: its definition does not rebuild (%s); attaching "
                         "without disks", name, exc)
            machine = PersistentMachine(name)
        run_dir = Path(runtime.run_dir)
        machine.run_dir = run_dir
        try:
            history = (run_dir / "serial0.log").read_bytes()
        except OSError:
            history = b""
        try:
            machine.console.attach(launch.connect_unix(run_dir / "serial0.sock"),
                                   history=history)
            machine._shell_console.attach(launch.connect_unix(run_dir / "shell.sock"))
        except OSError as exc:
            raise QemuError(f"machine {name!r}: cannot connect to its consoles in "
                            f"{run_dir}: {exc}") from exc
        machine._shell = Shell(machine._shell_console, expect_hello=False)
        monitor = Monitor(name, logger=machine.log)
        monitor.connect(str(run_dir / "qmp.sock"), timeout=timeout)
        machine._monitor = monitor
        machine._proc = proc  # type: ignore[assignment]  # duck-types Popen; see README
        machine.accel = runtime.accel
        machine.argv = list(runtime.argv)
        machine.started_at = time.monotonic() - (time.time() - runtime.started)
        machine.state = State.RUNNING
        if str(monitor.execute("query-status", timeout=timeout)["status"]) == "paused":
            machine.state = State.PAUSED
        machine._session = session
        machine._recorded_pid = runtime.pid
        nics = record.definition.get("nics")
        if isinstance(nics, int) and nics and record.lab is None:
            machine._owned_netns = name
        return machine
    except BaseException:
        if machine is not None:
            if machine._monitor is not None:
                machine._monitor.close()
                machine._monitor = None
            machine.console.close()
            machine._shell_console.close()
            machine._proc = None
        if proc is not None:
            proc.close()
        session.release()
        raise


def detach(machine: Machine) -> None:
    """Disconnect from a running machine and leave it running, its record in place.

    Afterwards ``machine`` is inert: ``stop()`` and ``kill()`` do nothing; use
    :func:`attach` (in any process) to control the machine again.
    """
    if not isinstance(machine, PersistentMachine):
        raise StateError(f"machine {machine.name!r} keeps no record; only a "
                         "PersistentMachine can be detached")
    machine._require_state(State.RUNNING, State.PAUSED, action="detach")
    if machine._monitor is not None:
        machine._monitor.close()
        machine._monitor = None
    machine.console.close()
    machine._shell_console.close()
    proc = machine._proc
    machine._proc = None
    if isinstance(proc, AdoptedProcess):
        proc.close()
    elif proc is not None:
        with contextlib.suppress(AttributeError):
            proc.returncode = 0  # keeps Popen.__del__ from warning; the process runs on
    from vmanager.state import _net
    for nic in list(getattr(machine, "_own_nics", [])):
        _net.forget(nic)
    ns = getattr(machine, "_namespace", None)
    if ns is not None:
        _net.forget(ns)
    machine._detached = True
    machine._recorded_pid = None
    machine.state = State.DEFINED
    machine._release_locks()
    machine.log.info("detached; QEMU keeps running (pid in %s)",
                     records.record_path(machine.name))


def run_dir_of(name: str) -> Path:
    """Where machine ``name``'s sockets and logs are."""
    return paths.run_dir() / "machines" / name
