"""Saving a machine as a template, and starting a clone of one (see :mod:`.template`).

``save``: the source is frozen, its device state saved without RAM
(``x-ignore-shared``), its RAM file linked (or copied) into the template and each
writable disk copied there, flattened (``qemu-img convert``: QEMU has flushed
and let go of its disks at the end of the save, so the copies match the saved
state); then the source ends. ``start_clone``: QEMU starts with the template's
RAM mapped copy-on-write and its disks as overlays, waits for the state, checks
its devices against the template's, loads it, and the clone's NICs are
hot-plugged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from vmanager import paths, validate
from vmanager.errors import ConfigError
from vmanager.machine import migration
from vmanager.machine.base import State
from vmanager.machine.template import (
    STATE_FILE,
    TemplateDisk,
    TemplateInfo,
    disk_file,
    write,
)
from vmanager.qemu import microvm

if TYPE_CHECKING:
    from vmanager.machine.machine import Machine

#: Seconds a disk copy may take (a real OS image is a few GiB).
DISK_COPY_TIMEOUT = 1800.0


def save(m: Machine, directory: str | os.PathLike[str], *, timeout: float) -> TemplateInfo:
    """See :meth:`Machine.save_template`."""
    _require_source(m)
    ram = m.template.ram_file
    assert ram is not None
    path = make_directory(directory)
    was_running = m.state == State.RUNNING
    try:
        if was_running:
            m.freeze()  # the RAM file must not change after the device state is saved
        devices, running_config = migration.device_map(m), config(m)
        migration.save(m, path / STATE_FILE, keep_running=True,
                       progress=None, timeout=timeout, ignore_shared=True)
        disks = _copy_disks(m, path)
        info = write(path, ram=ram, memory=m.memory, machine_type=m.machine_type,
                     config=running_config, devices=devices,
                     source=m.name, running=was_running, disks=disks)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # made by this save
        if was_running and m.is_alive():
            m.unfreeze()
        raise
    m.kill()  # the guest lives on in the template; its own run ends here
    m.log.info("saved template %s", path)
    return info


def start_clone(m: Machine, *, timeout: float) -> None:
    """Start clone ``m`` from its template: map the RAM, load the state, plug its NICs."""
    info = m.template.info
    assert info is not None
    m.template.check_config({"cpus": m.cpus, "firmware": m.firmware})  # before QEMU starts
    model = info.config.get("cpu_model")
    if m.cpu_model is None and isinstance(model, str):
        m.cpu_model = model  # a clone not told otherwise gets the CPU its guest knows

    def check() -> None:
        m.template.check_config(config(m))
        m.template.check_clone(migration.device_map(m))

    with m.network.held_back() as nics:
        if nics and not nic_hotplug(m.machine_type):
            raise ConfigError(f"machine {m.name!r} is a clone with NICs on machine type "
                              f"{m.machine_type!r}, which has no bus to hot-plug them into "
                              "(a microvm has no PCI, q35's PCIe root bus takes no hot-plug); "
                              "a clone's NICs are hot-plugged after its state loads: use "
                              "machine_type 'pc' for clones with NICs")
        migration.restore(m, info.state, timeout=max(timeout, 60.0),
                          ignore_shared=True, check=check)
        if m.template.empty_cd_interface() is not None:
            m.cdrom.drive = True  # the empty drive takes a CD (m.cdrom.change)
        try:
            # the clone's own RAM is private: its save_state, migrate and snapshots
            # carry it all, in a stream any machine built like it loads
            m.qmp("migrate-set-capabilities",
                  {"capabilities": [{"capability": "x-ignore-shared", "state": False}]})
            if info.running:
                m.unfreeze()  # frozen for the save, not by its user
            for nic in nics:
                m.network.add(nic)
        except BaseException:
            m.kill()
            raise
    m.log.info("started from template %s", info.path)


def nic_hotplug(machine_type: str) -> bool:
    """Whether NICs can be hot-plugged into a machine of this type as vmanager builds it."""
    return not microvm.is_microvm(machine_type) and "q35" not in machine_type


def config(m: Machine) -> dict[str, str | int | None]:
    """What QEMU runs that a clone must share with its template's source (``CONFIG_KEYS``).

    Asked of QEMU, not of ``m``: a machine attached from another process (the
    CLI's ``save-template``) does not know its CPU model.
    """
    cpus = m.qmp("query-cpus-fast")
    cpu = str(m.qmp("qom-get", {"path": cpus[0]["qom-path"], "property": "type"}))
    machine = str(m.qmp("qom-get", {"path": "/machine", "property": "type"}))
    return {"machine": machine.removesuffix("-machine"), "cpus": len(cpus),
            "cpu_model": cpu.removesuffix("-x86_64-cpu"), "firmware": m.firmware,
            "memory_slots": m.ram.slots}


def require_lasting_disks(m: Machine, action: str) -> None:
    """Refuse to save or migrate a clone whose disks are overlays that go with its run.

    The saved or migrated guest would come back on fresh overlays of the
    template's disks, without what it wrote: its file systems would not match
    its memory.
    """
    if m.template.disk_ids:
        raise ConfigError(f"cannot {action}: clone {m.name!r} runs on overlays of its "
                          "template's disks that go when it stops, so its guest would come "
                          "back without what it wrote; give the clone disks of its own "
                          "(harddrives=, e.g. lasting overlays of the template's disk copies)")


def make_directory(directory: str | os.PathLike[str]) -> Path:
    """Create the template's directory (it must not exist: vmanager adopts nothing)."""
    path = Path(os.path.abspath(validate.path(directory, what="template directory")))
    why = paths.trusted_path(path.parent)
    if why is not None:
        raise ConfigError(f"cannot save a template in {str(path)!r}: {why}")
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        raise ConfigError(f"template directory {str(path)!r} exists already; "
                          "give a new path (vmanager does not overwrite it)") from None
    except OSError as exc:
        raise ConfigError(f"cannot create template directory {str(path)!r}: "
                          f"{exc.strerror}") from exc
    return path


def _require_source(m: Machine) -> None:
    """A machine that can be saved as a template now, or a clear error."""
    m._require_state(State.RUNNING, State.PAUSED, action="save a template")
    if not m.template.source:
        raise ConfigError(f"machine {m.name!r} keeps its RAM in anonymous memory; start it "
                          "with template_source=True to save it as a template")
    if m.network.nics:
        raise ConfigError(f"machine {m.name!r} has {len(m.network.nics)} NIC(s); a template "
                          "cannot hold NICs (every clone would use their MAC addresses): give "
                          "the clones NICs instead, hot-plugged after their state loads")
    if migration.memory_map(m)["plugged-memory"]:
        raise ConfigError(f"machine {m.name!r} has hot-plugged memory (DIMMs); a clone "
                          "starts with its memory= only, so it could not load the state: "
                          "give the source more memory= instead, or plug DIMMs into the "
                          "clones after their start")


def _copy_disks(m: Machine, into: Path) -> tuple[TemplateDisk, ...]:
    """Each writable disk copied (flattened) into the template; read-only ones named."""
    from vmanager.storage import qemu_img
    disks = []
    for index, drive in enumerate(m.harddrives):
        if drive.readonly:
            disks.append(TemplateDisk(interface=drive.interface, path=str(drive.path),
                                      format=drive.format))
            continue
        target = into / disk_file(index)
        # -U: QEMU still holds the image open, inactive since the save ended (flushed)
        qemu_img.run(["convert", "-q", "-U", "-f", drive.format, "-O", "qcow2", "--",
                      str(drive.path), str(target)], timeout=DISK_COPY_TIMEOUT)
        os.chmod(target, 0o600)
        disks.append(TemplateDisk(interface=drive.interface, file=target.name))
    return tuple(disks)
