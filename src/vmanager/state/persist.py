"""Machines that outlive the process that started them.

:class:`~vmanager.state.recorder.FileRecorder` writes the machine's record
when QEMU is up (with every part's runtime) and removes (or, for a persistent
definition, empties) it when the machine is torn down. :func:`attach` builds a
:class:`~vmanager.Machine` through its public constructor for a machine
another process started and hands it the running QEMU
(:meth:`~vmanager.Machine.reconnect`): QMP, consoles (with history from
``serial0.log``), the backdoor shell and every part work again.
:func:`detach` lets a machine go on running after this process lets go of it.

One process at a time talks to a machine: QEMU's sockets take one client each.
The *session lock* (``locks/session-NAME.lock``) says who; :func:`attach`
waits for it and then names the holder if it never comes free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmanager import paths
from vmanager.errors import HostError, VmanagerError
from vmanager.machine import Machine
from vmanager.machine.recorder import RunInfo
from vmanager.qemu import launch
from vmanager.qemu.history import DEFAULT_LIMIT
from vmanager.qemu.logrotate import RotatingLog
from vmanager.state import records
from vmanager.state.process import AdoptedProcess, Liveness, ProcessIdentity
from vmanager.state.recorder import FileRecorder, session_lock
from vmanager.state.records import MachineRecord, StaleRecordError

_log = logging.getLogger(__name__)


def machine_kwargs(name: str, definition: Mapping[str, Any], *,
                   for_attach: bool = False) -> dict[str, Any]:
    """Keyword arguments for :class:`Machine` from a record's definition.

    ``guest = "tiny"`` boots the tiny guest (built on first use); an image name
    (``"debian-12"``) boots an overlay of that image (built and cached on first
    use; the overlay, in the state directory, keeps the machine's changes). With
    ``for_attach`` nothing that is only needed to start QEMU is resolved (kernel
    files, the tiny guest), since the machine already runs.
    """
    from vmanager.storage import CD, Harddrive
    kw: dict[str, Any] = {}
    for key in ("memory", "cpus", "accel", "machine_type", "tcg_tb_size", "qemu_binary",
                "firmware", "nvram"):
        if definition.get(key) is not None:
            kw[key] = definition[key]
    if not for_attach:
        if definition.get("guest") == "tiny":
            from vmanager.guests import tiny_guest
            # the definition's own tcg_tb_size (and machine_type) win over the guest's
            for key, value in tiny_guest().machine_args(
                    name, machine_type=kw.get("machine_type", "pc")).items():
                kw.setdefault(key, value)
        for key in ("kernel", "initrd", "append", "cpu_model"):
            if definition.get(key) is not None:
                kw[key] = definition[key]
        if definition.get("extra_args"):
            kw["extra_args"] = list(definition["extra_args"])
        if definition.get("cd"):
            kw["cd"] = CD(definition["cd"])
    disks = []
    guest = definition.get("guest")
    if guest is not None and guest != "tiny":
        disks.append(_image_overlay(name, str(guest), create=not for_attach))
    if definition.get("template_source") is True:
        kw["template_source"] = True
    if definition.get("template") and not for_attach:  # a running clone needs no template
        kw["template"] = definition["template"]
    if definition.get("guest_agent") is False:
        kw["guest_agent"] = False
    if definition.get("cloud_init") and not for_attach:
        from vmanager.images.cloudinit import CloudInit
        kw["cloud_init"] = CloudInit.from_mapping(definition["cloud_init"])
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


def _overlay_path(name: str, image: str) -> Path:
    return paths.state_dir() / "disks" / f"{name}-{image}.qcow2"


def remove_image_overlay(name: str, definition: Mapping[str, Any]) -> Path | None:
    """Remove the overlay vmanager made for machine ``name``'s image guest, if any.

    ``undefine`` and a lab's ``down`` call this: the overlay is vmanager's own
    file (a user's ``disks`` are never touched). Only a regular file owned by
    this user is removed; anything else there is left with a warning.
    """
    from vmanager.images import DISTRIBUTIONS
    guest = definition.get("guest")
    if guest not in DISTRIBUTIONS:
        return None
    return _remove_own_file(_overlay_path(name, str(guest)), f"{name} disk")


def nvram_path(name: str) -> Path:
    """Where a machine defined with UEFI keeps its variable store (libvirt's ``NAME_VARS.fd``)."""
    return paths.private_dir(paths.state_dir() / "nvram") / f"{name}_VARS.fd"


def remove_nvram(name: str, definition: Mapping[str, Any]) -> Path | None:
    """Remove the variable store :func:`nvram_path` gave machine ``name`` (``undefine``).

    An ``nvram`` the user chose elsewhere is theirs and never touched.
    """
    nvram = definition.get("nvram")
    if not isinstance(nvram, str) or Path(nvram) != nvram_path(name):
        return None
    return _remove_own_file(Path(nvram), f"{name} UEFI variable store")


def remove_state_disk(name: str) -> Path | None:
    """Remove the snapshot state disk machine ``name`` got (``undefine``, a lab's ``down``).

    A machine without a writable qcow2 disk keeps its snapshots in this file of
    vmanager's (``Snapshots.state_disk``); they go with the machine's definition.
    Its directory goes too when nothing else is left in it.
    """
    from vmanager.machine.state import STATE_DISK_NAME
    directory = paths.state_dir() / "machines" / name
    removed = _remove_own_file(directory / STATE_DISK_NAME, f"{name} snapshot state disk")
    with contextlib.suppress(OSError):  # absent, or holding something else: left alone
        directory.rmdir()
    return removed


def _remove_own_file(path: Path, what: str) -> Path | None:
    """Remove ``path`` if it is a regular file of this user; else leave it with a warning."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        _log.warning("not removing %s: not a regular file of this user", path)
        return None
    path.unlink()
    _log.info("removed %s %s", what, path)
    return path


def image_overlay_path(name: str, image: str) -> Path:
    """Where machine ``name``'s own disk on image ``image`` lives on this host."""
    return _overlay_path(name, image)


def _image_overlay(name: str, image: str, *, create: bool) -> Any:
    """Machine ``name``'s own disk on image ``image`` (made on first use)."""
    from vmanager import images
    from vmanager.storage import Harddrive
    paths.private_dir(paths.state_dir() / "disks")
    path = _overlay_path(name, image)
    if not create:  # a running machine: its overlay names the image it was made on
        return Harddrive(path, allowed_dirs=[paths.cache_dir() / "images"])
    base = images.build(image)
    drive = Harddrive(path, backing=base.path)
    if not drive.exists:
        drive.create()
    return drive


#: Every :class:`Machine` keeps a record now; the old name stays for callers.
PersistentMachine = Machine


def build_machine(record: MachineRecord, *, for_attach: bool = False,
                  **extra: Any) -> PersistentMachine:
    """A (not yet started) machine object from a record's definition."""
    kwargs = machine_kwargs(record.name, record.definition, for_attach=for_attach)
    return PersistentMachine(record.name, **kwargs, **extra)


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
    _recover_unrecorded(name)
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
        rec = FileRecorder(session=session, pid=runtime.pid)
        try:
            machine = build_machine(record, for_attach=True, recorder=rec)
        except VmanagerError as exc:
            _log.warning("machine %s: its definition does not rebuild (%s); attaching "
                         "without disks", name, exc)
            machine = PersistentMachine(name, recorder=rec)
        run_dir = Path(runtime.run_dir)
        # the end of the log only (a guest decides how much it printed), no symlinks
        history = RotatingLog(run_dir / "serial0.log").history(DEFAULT_LIMIT)
        parts = dict(runtime.parts)
        nics = record.definition.get("nics")
        if "nics" not in parts and isinstance(nics, int) and nics and record.lab is None:
            # a record written before parts were recorded: its namespace is the machine's
            parts["nics"] = {"namespace": True, "slots": []}
        run = RunInfo(name=name, pid=runtime.pid, argv=runtime.argv, run_dir=runtime.run_dir,
                      accel=runtime.accel, definition=record.definition, parts=parts)
        machine.reconnect(run, proc, timeout=timeout, history=history,
                          started=time.monotonic() - (time.time() - runtime.started))
        return machine
    except BaseException:
        if proc is not None:
            proc.close()
        session.release()
        raise


def _recover_unrecorded(name: str) -> None:
    """Record a QEMU whose manager died before it wrote the machine's record.

    The run directory's pidfile is believed only when that process's argv names
    the run directory (:func:`launch.owner_pid`), so nothing else is adopted.
    """
    if records.find(name) is not None:
        return
    run_dir = run_dir_of(name)
    pid = launch.owner_pid(run_dir)
    if pid is None:
        return
    from vmanager.state.lock import locked
    from vmanager.state.records import Runtime
    with locked("machine", name, timeout=30.0):
        if records.find(name) is not None:
            return
        identity = ProcessIdentity.of(pid)
        accel = "kvm" if any("accel=kvm" in a for a in identity.argv) else "tcg"
        runtime = Runtime(pid=pid, starttime=identity.starttime, argv=identity.argv,
                          run_dir=str(run_dir), accel=accel, started=time.time(), owner_pid=0)
        records.save(MachineRecord(name, runtime=runtime))
    _log.warning("machine %s: adopted QEMU pid %d, which runs without a record (the process "
                 "that started it died first)", name, pid)


def detach(machine: Machine) -> None:
    """Disconnect from a running machine and leave it running, its record in place.

    Afterwards ``machine`` is inert: ``stop()`` and ``kill()`` do nothing; use
    :func:`attach` (in any process) to control the machine again.
    """
    machine.detach()


def run_dir_of(name: str) -> Path:
    """Where machine ``name``'s sockets and logs are."""
    return paths.run_dir() / "machines" / name
