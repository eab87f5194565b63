"""The seed's flat Machine API: one-line delegates to the parts, and the monitor verbs.

``m.add_nic()`` is ``m.network.add()``, ``m.snapshot(name)`` is
``m.snapshots.save(name)``, ``m.screenshot(f)`` is ``m.screen.screenshot(f)``...
Each delegate's docstring is its part method's first line; the part's method
documents the rest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from vmanager.errors import ConfigError
from vmanager.machine.base import State
from vmanager.machine.control import ControlVerbs
from vmanager.machine.screen_verbs import ScreenVerbs

if TYPE_CHECKING:
    from vmanager.machine.agent import AgentChannel, GuestCommands
    from vmanager.machine.boot import BootOrder
    from vmanager.machine.cdrom import CdDrive
    from vmanager.machine.chardevs import Chardevs
    from vmanager.machine.disks import Disks
    from vmanager.machine.input import Input
    from vmanager.machine.memory import Memory
    from vmanager.machine.migration import Migratable, Migration
    from vmanager.machine.nics import Nics
    from vmanager.machine.process import Process
    from vmanager.machine.screen import Screen
    from vmanager.machine.shell import GuestShell
    from vmanager.machine.snapshots import Snapshots
    from vmanager.machine.state import (
        Chardev,
        DumpCallback,
        DumpResult,
        MemoryInfo,
        MigrationResult,
        ProgressCallback,
    )
    from vmanager.machine.template import TemplateInfo, Templating
    from vmanager.net import VirtualNic
    from vmanager.qemu.chardev import ExecResult
    from vmanager.storage import CD, Harddrive, SnapshotInfo


class SeedVerbs(ControlVerbs, ScreenVerbs):
    """The Machine's flat methods; the Machine defines the attributes declared here."""

    name: str
    state: State
    log: logging.Logger
    kernel: Path | None
    shell: GuestShell
    ram: Memory
    screen: Screen
    input: Input
    disks: Disks
    cdrom: CdDrive
    network: Nics
    migration: Migration
    boot: BootOrder
    snapshots: Snapshots
    template: Templating
    chardevs: Chardevs
    agent: AgentChannel
    commands: GuestCommands
    _proc: Process | None

    # qmp, _require_monitor and _require_state: declared by ControlVerbs

    def is_alive(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    # -- guest commands: the backdoor shell, else the guest agent (m.commands) -----------
    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        """Run ``command`` under ``/bin/sh -c`` in the guest; see :meth:`GuestCommands.execute`."""
        return self.commands.execute(command, timeout=timeout)

    def succeed(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` in the guest and return its stdout; raise unless it exits 0."""
        return self.commands.succeed(command, timeout=timeout)

    def fail(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` and return its stdout; raise if it *succeeds*."""
        return self.commands.fail(command, timeout=timeout)

    def wait_until_succeeds(self, command: str, timeout: float = 60.0,
                            interval: float = 0.5) -> str:
        """Retry ``command`` until it exits 0; return its stdout."""
        return self.commands.wait_until_succeeds(command, timeout=timeout, interval=interval)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the backdoor shell or the guest agent answers; seconds since start."""
        return self.commands.wait_ready(timeout)

    # -- disks, CD, boot (m.disks, m.cdrom, m.boot) -------------------------------------
    @property
    def harddrives(self) -> list[Harddrive]:
        """The machine's harddrives; ``harddrives[i]`` is QEMU's ``disk{i}``."""
        return self.disks.harddrives

    def resize_harddrive(self, drive: Harddrive | int, size: int | str, *,
                         shrink: bool = False) -> int:
        """Resize ``drive`` (online while the machine runs, else offline); see :meth:`Disks.resize`.

        The seed's call. Shrinking is refused unless ``shrink=True``.
        """
        if not self.disks.harddrives and self.template.disk_ids:
            raise ConfigError(f"clone {self.name!r} has no harddrives to resize: it runs on "
                              "overlays of its template's disks, which go when it stops; give "
                              "it harddrives= of its own (e.g. overlays of the template's "
                              "copies) to resize them")
        if not self.is_alive() and self.state is State.STOPPED:
            self.kill()  # QEMU exited by itself: clean up, which releases the disk
        return self.disks.resize(drive, size, shrink=shrink)

    def disk_snapshots(self, drive: Harddrive) -> list[SnapshotInfo]:
        """The internal snapshots of ``drive`` as the running QEMU sees them."""
        return self.disks.disk_snapshots(drive)

    @property
    def cd(self) -> CD | None:
        """The CD in the drive (or to start with); ``None`` when there is none."""
        return self.cdrom.cd

    @cd.setter
    def cd(self, cd: CD | None) -> None:
        self.cdrom.cd = cd

    def eject(self) -> None:
        """Open the CD tray and take the medium out; see :meth:`CdDrive.eject`."""
        self.cdrom.eject()

    def eject_cd(self, cd: CD) -> None:
        """Take ``cd`` out of the running machine's drive; what :meth:`CD.eject` calls."""
        self.cdrom.eject_cd(cd)

    def change_cd(self, cd: CD) -> None:
        """Put ``cd`` in the CD drive; see :meth:`CdDrive.change`."""
        self.cdrom.change(cd)

    def change_boot_device(self, device: str | Harddrive | CD) -> list[str]:
        """Boot from ``device`` first from the next (re)boot on; see :meth:`BootOrder.change`."""
        return self.boot.change(device)

    # -- NICs (m.network) -----------------------------------------------------------------
    @property
    def nics(self) -> list[VirtualNic]:
        """The machine's VirtualNics, in QEMU's order (a copy)."""
        return list(self.network.nics)

    @property
    def namespace(self) -> str:
        """The name of the machine's own network namespace."""
        return self.network.namespace

    def nic_id(self, nic: VirtualNic | int | str) -> str:
        """QEMU's device id of ``nic`` (``"nic0"``...), as used by QMP."""
        return self.network.nic_id(nic)

    def add_nic(self, nic: VirtualNic | None = None, *, model: str = "virtio-net-pci",
                timeout: float = 30.0) -> VirtualNic:
        """Hot-plug a NIC into the running machine; see :meth:`Nics.add`."""
        return self.network.add(nic, model=model, timeout=timeout)

    def del_nic(self, nic: VirtualNic | int | str, *, timeout: float = 30.0) -> None:
        """Unplug a NIC and wait until the guest released it; see :meth:`Nics.remove`."""
        self.network.remove(nic, timeout=timeout)

    def nic_state(self, nic: VirtualNic | int | str, up: bool) -> None:
        """Turn the NIC's link on or off inside QEMU; see :meth:`Nics.set_link`."""
        self.network.set_link(nic, up)

    # -- memory (m.ram) -------------------------------------------------------------------
    @property
    def memory(self) -> int:
        """RAM at start, in MiB."""
        return self.ram.size

    @memory.setter
    def memory(self, mib: int) -> None:
        self.ram.size = mib

    @property
    def max_memory(self) -> int | None:
        """Memory hot-plug ceiling in MiB (``-m maxmem``); set before ``start_vm()``."""
        return self.ram.max_memory

    @max_memory.setter
    def max_memory(self, mib: int | None) -> None:
        self.ram.max_memory = mib

    @property
    def memory_slots(self) -> int:
        """DIMM slots for hot-plug (``-m slots``); set before ``start_vm()``."""
        return self.ram.slots

    @memory_slots.setter
    def memory_slots(self, slots: int) -> None:
        self.ram.slots = slots

    def memory_info(self) -> MemoryInfo:
        """RAM now: base, hot-plugged, after the balloon, ceiling and free slots (MiB)."""
        return self.ram.info()

    def increase_ram(self, mib: int) -> MemoryInfo:
        """Hot-plug ``mib`` MiB of RAM (a ``pc-dimm``) into the running guest.

        ``mib`` is a positive multiple of 128 (Linux onlines memory in 128 MiB
        blocks). The guest must online it (the tiny guest does, by
        ``memhp_default_state=online``). Room comes from ``max_memory`` and
        ``memory_slots`` set before start (default ``memory`` + 1024 MiB, 8
        slots). Raises :class:`ConfigError` for a bad size or no room left.
        """
        return self.ram.increase(mib)

    def balloon(self, mib: int) -> MemoryInfo:
        """Let the guest use only ``mib`` MiB (virtio balloon); grow back up to the total.

        Waits up to 30 s for the guest's balloon driver to get there, then returns
        the reading (check ``balloon`` in it).
        Raises :class:`ConfigError` when ``mib`` exceeds the plugged total, or for
        a template's source or clone (no balloon: see :mod:`.template`).
        """
        if self.template.ram_file is not None:
            raise ConfigError(f"machine {self.name!r} has no balloon: its RAM is a template's "
                              "file, in which the balloon would punch holes every clone sees")
        return self.ram.balloon(mib)

    def dump_memory(self, path: str | os.PathLike[str], *, paging: bool = False,
                    progress: DumpCallback | None = None,
                    timeout: float = 600.0) -> DumpResult:
        """Write guest memory to ``path`` as an ELF core (``dump-guest-memory``).

        The dump runs in the background in QEMU; ``progress`` is called with
        :class:`DumpProgress` readings until it is done. The file appears only
        when complete. Raises :class:`HostError` when ``path`` cannot be written
        (before QEMU is asked), :class:`QemuError` when the dump fails.
        """
        return self.ram.dump(Path(path), paging=paging, progress=progress, timeout=timeout)

    # -- snapshots and chardevs (m.snapshots, m.chardevs) ----------------------------------
    def snapshot(self, name: str, *, overwrite: bool = False, quiesce: bool = False,
                 timeout: float = 600.0) -> SnapshotInfo:
        """Snapshot the running machine: RAM, devices, every writable disk; see :meth:`Snapshots.save`.

        ``quiesce=True`` freezes the guest's file systems through the guest
        agent while the snapshot is taken (thawed again whatever happens), so the
        disks alone hold clean file systems too.
        """  # noqa: E501
        if not quiesce:
            return self.snapshots.save(name, overwrite=overwrite, timeout=timeout)
        with self.agent.frozen():
            return self.snapshots.save(name, overwrite=overwrite, timeout=timeout)

    def load_snapshot(self, name: str, *, timeout: float = 600.0) -> None:
        """Return the running machine to snapshot ``name``; see :meth:`Snapshots.load`.

        File systems a quiesced snapshot recorded frozen are thawed through the agent.
        """
        self.snapshots.load(name, timeout=timeout)
        self.commands.thaw_after_load()

    def delete_snapshot(self, name: str, *, timeout: float = 600.0) -> None:
        """Delete whole-machine snapshot ``name``; see :meth:`Snapshots.delete`."""
        self.snapshots.delete(name, timeout=timeout)

    @property
    def state_disk(self) -> Path:
        """Where a machine without a writable qcow2 disk keeps snapshot state."""
        return self.snapshots.state_disk

    def delete_state_disk(self) -> None:
        """Remove the state disk and so every snapshot in it (machine not running)."""
        self.snapshots.delete_state_disk()

    def create_chardev(self, kind: str = "socket", *, path: str | os.PathLike[str] | None = None,
                       port_name: str | None = None, chardev_id: str | None = None) -> Chardev:
        """Add a character device to the running machine, optionally as a guest port.

        ``kind`` is ``"socket"`` (QEMU listens on a unix socket in the run
        directory; :meth:`Chardev.connect` to it), ``"file"`` (guest output goes
        to ``path``) or ``"pty"``. With ``port_name`` a ``virtserialport`` of that
        name is added, which the guest sees as ``/dev/vportNpM`` with
        ``/sys/class/virtio-ports/vportNpM/name`` = ``port_name``. Raises
        :class:`ConfigError` for bad options; on failure nothing is left behind.
        """
        return self.chardevs.create(kind, path=path, port_name=port_name,
                                    chardev_id=chardev_id)

    def remove_chardev(self, chardev: Chardev | str, *, timeout: float = 30.0) -> None:
        """Remove a chardev made by :meth:`create_chardev` (and its guest port)."""
        self.chardevs.remove(chardev, timeout=timeout)

    # -- migration (m.migration) ----------------------------------------------------------
    def migrate(self, target: Migratable, *, transport: str = "unix",
                progress: ProgressCallback | None = None, timeout: float = 600.0,
                bandwidth_mib: int | None = None, downtime_ms: int = 300) -> MigrationResult:
        """Live-migrate this running machine into ``target``, a defined, stopped Machine.

        ``target`` must be built like this one (same devices and memory, disks on
        the same image files); it is started with ``-incoming defer`` and receives
        the guest over a unix socket (``transport="unix"``) or TCP on 127.0.0.1
        (``"tcp"``). ``progress`` is called with :class:`MigrationProgress`
        readings. On success ``target`` runs the guest and this machine is
        stopped. On failure (including ``timeout``) the target is killed, this
        machine keeps running and :class:`QemuError` is raised; a target whose
        devices differ gets a :class:`ConfigError` before anything is sent.
        """
        from vmanager.machine import cloning, migration
        cloning.require_lasting_disks(self, "migrate")  # type: ignore[arg-type]
        return migration.migrate(self, target, transport=transport,  # type: ignore[arg-type]
                                 progress=progress, timeout=timeout,
                                 bandwidth_mib=bandwidth_mib, downtime_ms=downtime_ms)

    def save_state(self, path: str | os.PathLike[str], *, keep_running: bool = False,
                   progress: ProgressCallback | None = None,
                   timeout: float = 600.0) -> MigrationResult:
        """Save the running machine's whole state (RAM, devices) to the file ``path``.

        Disks are not copied: restore with the same disk images. Afterwards the
        machine stops, unless ``keep_running``. The file appears only when
        complete; on failure the machine keeps running and :class:`QemuError`
        is raised. Restore with :meth:`restore_state`.
        """
        from vmanager.machine import cloning, migration
        cloning.require_lasting_disks(self, "save its state")  # type: ignore[arg-type]
        return migration.save(self, Path(path), keep_running=keep_running,  # type: ignore[arg-type]
                              progress=progress, timeout=timeout)

    def save_template(self, directory: str | os.PathLike[str], *,
                      timeout: float = 600.0) -> TemplateInfo:
        """Save this running machine as a template in the new ``directory``, and end it.

        The machine must have been started with ``template_source=True`` and hold
        no NICs; each writable disk is copied into the template (flattened).
        ``Machine(..., template=directory)`` then makes clones that resume its
        guest as it is now, each on an overlay of those copies (see
        :mod:`vmanager.machine.template`). On failure the directory is removed and
        the machine keeps running.
        """
        from vmanager.machine import cloning
        return cloning.save(self, directory, timeout=timeout)  # type: ignore[arg-type]

    def restore_state(self, path: str | os.PathLike[str], *, timeout: float = 600.0) -> None:
        """Start this (stopped) machine from a file written by :meth:`save_state`.

        The machine must be built like the one that was saved. Raises
        :class:`NotFoundError` for a missing file, :class:`QemuError` (with
        QEMU's log) when the state does not load; nothing is left running then.
        """
        from vmanager.machine import migration
        migration.restore(self, Path(path), timeout=timeout)  # type: ignore[arg-type]
