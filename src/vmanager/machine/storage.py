"""Disks, CD-ROMs and the state of a running Machine.

:class:`StorageMixin` attaches the machine's :class:`~vmanager.Harddrive` and
:class:`~vmanager.CD` at launch and implements the seed's state calls on a
running machine: whole-machine snapshots, online disk resize, CD eject and
change, boot order, memory hot-plug and balloon, memory dumps, run-time
chardevs and migration (the last four in helper modules).

Whole-machine snapshots (:meth:`StorageMixin.snapshot`) keep RAM and device
state in the first writable qcow2 disk and a disk snapshot in every writable
qcow2 disk. **A machine without a writable qcow2 disk gets a state disk**: a
small qcow2 file ``vmstate.qcow2`` in the machine's state directory
(``$VMANAGER_STATE_DIR/machines/<name>/``), added with ``blockdev-add`` on the
first snapshot and never attached to a guest device, so the guest does not
see it. It stays between runs, so a later run of the same machine lists and
loads its snapshots; :meth:`StorageMixin.delete_state_disk` removes it. A
writable raw disk cannot be snapshotted, so a machine with one gets a
:class:`~vmanager.errors.StorageError` instead of a snapshot that would not
cover it.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import paths, validate
from vmanager.errors import (
    ConfigError,
    NotFoundError,
    QemuError,
    QMPError,
    StateError,
    StorageError,
)
from vmanager.machine import _jobs
from vmanager.machine.base import LaunchContext, MachineBase, State
from vmanager.machine.state import (
    STATE_DISK_NAME,
    Chardev,
    DumpCallback,
    DumpResult,
    MemoryInfo,
    MigrationResult,
    ProgressCallback,
)

if TYPE_CHECKING:
    from vmanager.qemu.chardev import Console, Shell
    from vmanager.storage import CD, Harddrive, SnapshotInfo

_log = logging.getLogger(__name__)

#: Node name of the state disk (see the module docstring).
STATE_NODE = "vmstate"
#: Virtual size of the state disk; RAM state is stored past its end, so it stays small.
STATE_DISK_SIZE = 1 << 20
#: Seconds a snapshot job may take (TCG guests with much RAM are slow to save).
SNAPSHOT_TIMEOUT = 600.0
#: Hot-plug ceiling above ``memory`` unless ``max_memory`` is set before start (MiB).
DEFAULT_HOTPLUG_HEADROOM = 1024
#: DIMM slots for memory hot-plug.
DEFAULT_MEMORY_SLOTS = 8
#: What ``change_boot_device`` accepts as a kind.
BOOT_KINDS = ("disk", "cd", "network")


class StorageMixin(MachineBase):
    """Harddrives, the CD and the running machine's state (snapshots, memory, migration)."""

    harddrives: list[Harddrive]
    cd: CD | None
    memory: int
    kernel: Path | None
    #: Memory hot-plug ceiling in MiB (``-m maxmem``); set before ``start_vm()``.
    max_memory: int | None
    #: DIMM slots for hot-plug (``-m slots``); set before ``start_vm()``.
    memory_slots: int
    # The core's consoles: migration replaces the shell on a guest that is already up.
    _shell: Shell
    _shell_console: Console

    def _init_storage(self, harddrives: Harddrive | Sequence[Harddrive] | None,
                      cd: CD | None) -> None:
        drives: list[Harddrive] = []
        if harddrives is not None or cd is not None:
            from vmanager.storage import CD, Harddrive
            if isinstance(harddrives, Harddrive):
                drives = [harddrives]
            elif harddrives is not None:
                drives = list(harddrives)
            for d in drives:
                if not isinstance(d, Harddrive):
                    raise ConfigError(f"harddrives takes Harddrive objects, got {d!r}")
            if cd is not None and not isinstance(cd, CD):
                raise ConfigError(f"cd takes one CD object, got {cd!r}")
        self.harddrives = drives
        self.cd = cd
        self.max_memory = None
        self.memory_slots = DEFAULT_MEMORY_SLOTS
        self._boot_first: list[str] = []
        self._attached: list[Harddrive] = []
        self._cd_drive = False          # the running machine has a CD drive (cd0)
        self._cd_nodes: list[str] = []  # nodes of the medium in it, top first
        self._media = itertools.count(1)
        self._state_node = False
        self._incoming = False
        self._chardevs: dict[str, Chardev] = {}
        self._dimms = itertools.count(1)

    # -- launch ---------------------------------------------------------------------
    def _prepare_launch(self, ctx: LaunchContext) -> None:
        super()._prepare_launch(ctx)
        order = self._boot_order()
        for index, drive in enumerate(self.harddrives):
            drive.attach(self)
            self._attached.append(drive)
            ctx.stack.callback(self._detach_drives)
            ctx.add(*drive.qemu_args(index, bootindex=_bootindex(order, drive.device_id(index))))
        if self.cd is not None:
            ctx.add(*self.cd.qemu_args(0, bootindex=_bootindex(order, self.cd.device_id(0))))
            self.cd.attach(self)
            ctx.stack.callback(self._detach_cd)
            self._cd_drive = True
            self._cd_nodes = [self.cd.node_name(0), f"{self.cd.node_name(0)}-file"]
        # Options of one -m merge, so this adds hot-plug room to the core's "-m size".
        ctx.add("-m", f"slots={self.memory_slots},maxmem={self._max_memory()}M",
                "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on")
        if self._incoming:
            ctx.add("-incoming", "defer")

    def _after_launch(self) -> None:
        super()._after_launch()
        # NICs get their -device from NetworkMixin without a bootindex; a boot order
        # that puts them first is applied now and holds from the next reset on.
        order = self._boot_order()
        nic_first = [d for d, kind in self._boot_devices() if kind == "network"
                     and d in self._boot_first]
        if nic_first and self.kernel is None and not self._incoming:
            try:
                self._apply_boot_order(order)
            except QemuError as exc:
                self.log.warning("could not apply boot order %s: %s", order, exc)

    def _teardown(self) -> None:
        try:
            super()._teardown()
        finally:
            self._detach_drives()
            self._detach_cd()
            self._cd_drive = False
            self._cd_nodes = []
            self._state_node = False
            self._incoming = False
            self._chardevs = {}

    def _detach_cd(self) -> None:
        if self.cd is not None:
            self.cd.detach(self)

    def _detach_drives(self) -> None:
        for drive in self._attached:
            drive.detach(self)
        self._attached = []

    def _max_memory(self) -> int:
        if self.max_memory is None:
            return self.memory + DEFAULT_HOTPLUG_HEADROOM
        if self.max_memory < self.memory:
            raise ConfigError(f"max_memory {self.max_memory} MiB is below memory "
                              f"{self.memory} MiB")
        return self.max_memory

    # -- block nodes ----------------------------------------------------------------
    def _block_nodes(self) -> dict[str, dict[str, Any]]:
        nodes = self.qmp("query-named-block-nodes", {"flat": True})
        return {n["node-name"]: n for n in nodes if n.get("node-name")}

    def _drive_index(self, drive: Harddrive | int) -> int:
        if isinstance(drive, int) and not isinstance(drive, bool):
            if not 0 <= drive < len(self.harddrives):
                raise NotFoundError(f"machine {self.name!r} has no harddrive number {drive} "
                                    f"(it has {len(self.harddrives)})")
            return drive
        for index, d in enumerate(self.harddrives):
            if d is drive:
                return index
        raise NotFoundError(f"{drive!r} is not a harddrive of machine {self.name!r}")

    def disk_snapshots(self, drive: Harddrive) -> list[SnapshotInfo]:
        """The internal snapshots of ``drive`` as the running QEMU sees them.

        :attr:`Harddrive.snapshots` calls this while the machine runs.
        """
        from vmanager.storage import SnapshotInfo
        node = drive.node_name(self._drive_index(drive))
        entry = self._block_nodes().get(node)
        if entry is None:
            raise NotFoundError(f"{self.name}: block node {node} is gone")
        return [SnapshotInfo.from_json(s) for s in entry.get("image", {}).get("snapshots", [])]

    def resize_harddrive(self, drive: Harddrive | int, size: int | str, *,
                         shrink: bool = False) -> int:
        """Resize ``drive`` (a Harddrive of this machine or its index) to ``size``.

        The seed's call. A stopped machine's disk is resized offline through
        :meth:`Harddrive.resize`; a running (or frozen) machine's online with
        QMP ``block_resize``, and the guest sees the new size at once (virtio-blk
        and scsi report it). ``size`` is bytes or a string like ``"2G"``. Returns
        the new size in bytes.

        Shrinking loses whatever lies past the new end (under a running guest, its
        file systems break), so it is refused unless ``shrink=True``.

        Raises:
            StorageError: shrinking without ``shrink=True``; a read-only disk;
                qemu-img or QEMU refused.
            NotFoundError: ``drive`` is not this machine's.
            ConfigError: a bad size.
        """
        index = self._drive_index(drive)
        disk = self.harddrives[index]
        nbytes = validate.size(size, what="disk size")
        if not isinstance(shrink, bool):
            raise ConfigError(f"shrink= takes True or False, got {shrink!r}")
        if not self.is_alive():
            if self.state is State.STOPPED:
                self.kill()  # QEMU exited by itself: clean up, which releases the disk
            return disk.resize(nbytes, shrink=shrink).virtual_size
        if disk.readonly:
            raise StorageError(f"{disk.path} is attached read-only; it cannot be resized")
        node = disk.node_name(index)
        entry = self._block_nodes().get(node)
        if entry is None:
            raise NotFoundError(f"{self.name}: block node {node} is gone")
        current = int(entry["image"]["virtual-size"])
        if nbytes == current:
            return current
        if nbytes < current and not shrink:
            raise StorageError(f"refusing to shrink {disk.path} from {current} to {nbytes} "
                               "bytes: data past the new end would be lost under the running "
                               "guest; pass shrink=True to do it anyway")
        try:
            self.qmp("block_resize", {"node-name": node, "size": nbytes})
        except QMPError as exc:
            raise StorageError(f"{self.name}: resizing {disk.path} to {nbytes} bytes failed: "
                               f"{exc.description}") from exc
        self.log.info("resized %s online from %d to %d bytes", disk.path, current, nbytes)
        return nbytes

    # -- whole-machine snapshots ----------------------------------------------------
    @property
    def state_disk(self) -> Path:
        """Where a machine without a writable qcow2 disk keeps snapshot state."""
        return paths.state_dir() / "machines" / self.name / STATE_DISK_NAME

    def delete_state_disk(self) -> None:
        """Remove the state disk and so every snapshot in it (machine not running)."""
        if self.state in (State.RUNNING, State.PAUSED):
            raise StateError(f"machine {self.name!r} is running; stop it before deleting its "
                             "state disk", state=self.state, required=State.DEFINED)
        self.state_disk.unlink(missing_ok=True)

    def _snapshot_nodes(self, *, create: bool) -> list[str]:
        """Nodes a whole-machine snapshot covers, the vmstate node first; [] if none yet."""
        writable = [(i, d) for i, d in enumerate(self.harddrives) if not d.readonly]
        raw = [str(d.path) for _, d in writable if d.format != "qcow2"]
        if raw:
            raise StorageError(f"machine {self.name!r} has writable raw disks ({', '.join(raw)}) "
                               "that internal snapshots cannot cover; use qcow2 or attach them "
                               "read-only")
        if writable:
            return [d.node_name(i) for i, d in writable]
        if not self._state_node and STATE_NODE in self._block_nodes():
            self._state_node = True  # added by an earlier process attached to this QEMU
        if not self._state_node:
            path = self.state_disk
            if not path.exists():
                if not create:
                    return []
                from vmanager.storage import qemu_img
                paths.private_dir(path.parent)
                qemu_img.create(path, fmt="qcow2", size=STATE_DISK_SIZE)
                self.log.info("created state disk %s for snapshots", path)
            try:
                self.qmp("blockdev-add", {"driver": "qcow2", "node-name": STATE_NODE,
                                          "file": {"driver": "file", "filename": str(path)}})
            except QMPError as exc:
                raise StorageError(f"{self.name}: cannot open state disk {path}: "
                                   f"{exc.description}") from exc
            self._state_node = True
        return [STATE_NODE]

    def snapshots(self) -> list[SnapshotInfo]:
        """Whole-machine snapshots (RAM, devices and disks), oldest first."""
        from vmanager.storage import SnapshotInfo
        self._require_monitor()
        nodes = self._snapshot_nodes(create=False)
        if not nodes:
            return []
        entry = self._block_nodes().get(nodes[0], {})
        found = [SnapshotInfo.from_json(s) for s in entry.get("image", {}).get("snapshots", [])]
        return [s for s in found if s.vm_state_size > 0]

    def snapshot(self, name: str, *, overwrite: bool = False,
                 timeout: float = SNAPSHOT_TIMEOUT) -> SnapshotInfo:
        """Snapshot the running machine: RAM, device state and every writable disk.

        Runs QMP ``snapshot-save`` with explicit nodes (see the module docstring
        for where state goes); the guest pauses while it saves, then carries on.
        Raises :class:`StorageError` if ``name`` exists (unless ``overwrite``) or
        a disk cannot be snapshotted, :class:`ConfigError` for a bad name.
        """
        name = _snapshot_name(name)
        self._require_monitor()
        nodes = self._snapshot_nodes(create=True)
        if any(s.name == name for s in self.snapshots()):
            if not overwrite:
                raise StorageError(f"machine {self.name!r} already has a snapshot {name!r}; "
                                   "pass overwrite=True or delete it first")
            self.delete_snapshot(name)
        try:
            _jobs.run_job(self._require_monitor(), "snapshot-save",
                          {"tag": name, "vmstate": nodes[0], "devices": nodes},
                          prefix="save", timeout=timeout)
        except QMPError as exc:
            raise StorageError(f"{self.name}: snapshot {name!r} failed: "
                               f"{exc.description}") from exc
        made = next((s for s in self.snapshots() if s.name == name), None)
        if made is None:
            raise StorageError(f"{self.name}: snapshot-save reported success but there is no "
                               f"snapshot {name!r}")
        self.log.info("snapshot %s saved (%d bytes of state)", name, made.vm_state_size)
        return made

    def load_snapshot(self, name: str, *, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        """Return the running machine to snapshot ``name`` (RAM, devices, disks).

        A running machine keeps running from the snapshot's moment; a frozen one
        stays frozen. Raises :class:`NotFoundError` naming the snapshots that do
        exist; the machine is untouched then.
        """
        name = _snapshot_name(name)
        self._require_monitor()
        self._require_snapshot(name)
        nodes = self._snapshot_nodes(create=False)
        try:
            _jobs.run_job(self._require_monitor(), "snapshot-load",
                          {"tag": name, "vmstate": nodes[0], "devices": nodes},
                          prefix="load", timeout=timeout)
        except QMPError as exc:
            raise StorageError(f"{self.name}: loading snapshot {name!r} failed: "
                               f"{exc.description}") from exc
        self.log.info("snapshot %s loaded", name)

    def delete_snapshot(self, name: str, *, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        """Delete whole-machine snapshot ``name`` from every disk that holds it.

        Raises :class:`NotFoundError` if there is none of that name.
        """
        name = _snapshot_name(name)
        self._require_monitor()
        self._require_snapshot(name)
        nodes = self._snapshot_nodes(create=False)
        try:
            _jobs.run_job(self._require_monitor(), "snapshot-delete",
                          {"tag": name, "devices": nodes}, prefix="delete", timeout=timeout)
        except QMPError as exc:
            raise StorageError(f"{self.name}: deleting snapshot {name!r} failed: "
                               f"{exc.description}") from exc
        self.log.info("snapshot %s deleted", name)

    def _require_snapshot(self, name: str) -> None:
        have = self.snapshots()
        if not any(s.name == name for s in have):
            names = ", ".join(repr(s.name) for s in have) or "none"
            raise NotFoundError(f"machine {self.name!r} has no snapshot {name!r} "
                                f"(snapshots: {names})")

    # -- CD-ROM ---------------------------------------------------------------------
    def eject(self) -> None:
        """Eject the CD (the seed's ``eject``: it calls :meth:`CD.eject`).

        On a running machine the tray opens and the medium is removed: the guest
        sees an empty drive. A stopped machine just forgets its CD for the next
        start. Raises :class:`StateError` when there is no CD to eject.
        """
        if self.state not in (State.RUNNING, State.PAUSED):
            if self.cd is None:
                raise StateError(f"machine {self.name!r} has no CD to eject", state="no CD")
            self.cd = None
            return
        if self.cd is None or not self._cd_drive or not self._cd_nodes:
            raise StateError(f"machine {self.name!r} has no CD in its drive to eject",
                             state="no CD", required="a CD in the drive")
        self.cd.eject(machine=self)

    def eject_cd(self, cd: CD) -> None:
        """Take ``cd`` out of the running machine's drive; what :meth:`CD.eject` calls.

        Raises :class:`StateError` when ``cd`` is not in this machine's drive,
        :class:`StorageError` when QEMU refuses.
        """
        self._require_state(State.RUNNING, State.PAUSED, action="eject a CD")
        if cd is not self.cd or not self._cd_nodes:
            raise StateError(f"{cd!r} is not in the drive of machine {self.name!r}",
                             state="not in the drive", required="in the drive")
        try:
            self.qmp("blockdev-open-tray", {"id": "cd0", "force": True})
            self.qmp("blockdev-remove-medium", {"id": "cd0"})
        except QMPError as exc:
            raise StorageError(f"{self.name}: ejecting the CD failed: {exc.description}") \
                from exc
        self._drop_medium_nodes()
        cd.detach(self)
        self.cd = None
        self.log.info("ejected %s", cd)

    def change_cd(self, cd: CD) -> None:
        """Put ``cd`` in the CD drive of the running machine (replacing any medium).

        The guest sees a media change and reads the new ISO. On a stopped
        machine it sets the CD for the next start. Raises :class:`StateError`
        if the running machine was started without a CD drive (give ``cd=``).
        """
        from vmanager.storage import CD
        if not isinstance(cd, CD):
            raise ConfigError(f"change_cd takes a CD object, got {cd!r}")
        if self.state not in (State.RUNNING, State.PAUSED):
            self.cd = cd
            return
        if not self._cd_drive:
            raise StateError(f"machine {self.name!r} was started without a CD drive; give it "
                             "cd= before start_vm()", state="no CD drive")
        if not cd.path.is_file():
            raise NotFoundError(f"ISO image {cd.path} does not exist")
        node = f"cd0-m{next(self._media)}"
        try:
            self.qmp("blockdev-open-tray", {"id": "cd0", "force": True})
            if self._cd_nodes:
                self.qmp("blockdev-remove-medium", {"id": "cd0"})
                self._drop_medium_nodes()
            self.qmp("blockdev-add", {"driver": "raw", "node-name": node, "read-only": True,
                                      "file": {"driver": "file", "filename": str(cd.path),
                                               "read-only": True}})
        except QMPError as exc:
            raise StorageError(f"{self.name}: changing the CD failed: {exc.description}") \
                from exc
        try:
            self.qmp("blockdev-insert-medium", {"id": "cd0", "node-name": node})
        except QMPError as exc:
            self._quiet("blockdev-del", {"node-name": node})
            raise StorageError(f"{self.name}: inserting {cd.path} failed: "
                               f"{exc.description}") from exc
        self._cd_nodes = [node]
        if self.cd is not None:
            self.cd.detach(self)
        self.cd = cd
        cd.attach(self)
        try:
            self.qmp("blockdev-close-tray", {"id": "cd0"})
        except QMPError as exc:
            raise StorageError(f"{self.name}: closing the CD tray failed: "
                               f"{exc.description}") from exc
        self.log.info("inserted %s", cd)

    def _drop_medium_nodes(self) -> None:
        for node in self._cd_nodes:
            self._quiet("blockdev-del", {"node-name": node})
        self._cd_nodes = []

    def _quiet(self, command: str, arguments: dict[str, Any]) -> None:
        """A best-effort clean-up command: failure is logged, not raised."""
        try:
            self.qmp(command, arguments)
        except QemuError as exc:
            self.log.debug("%s %s: %s", command, arguments, exc)

    # -- boot order -----------------------------------------------------------------
    def _boot_devices(self) -> list[tuple[str, str]]:
        """(device id, kind) of every device that can boot, in default order."""
        devices = [(d.device_id(i), "disk") for i, d in enumerate(self.harddrives)]
        if self.cd is not None or self._cd_drive:
            devices.append(("cd0", "cd"))
        # NetworkMixin's slots name the NIC devices of a running machine (ids stay
        # sparse after del_nic); before launch NIC n becomes device nicN.
        slots = getattr(self, "_slots", None) or []
        if slots:
            devices += [(str(slot.device), "network") for slot in slots]
        else:
            devices += [(f"nic{i}", "network") for i in range(len(getattr(self, "nics", [])))]
        return devices

    def _boot_order(self) -> list[str]:
        devices = [dev for dev, _ in self._boot_devices()]
        first = [d for d in self._boot_first if d in devices]
        return first + [d for d in devices if d not in first]

    def change_boot_device(self, device: str | Harddrive | CD) -> list[str]:
        """Boot from ``device`` first from the next (re)boot on; return the new order.

        ``device`` is a kind (``"disk"``, ``"cd"``, ``"network"``: all such
        devices, in their order), a device id (``"disk1"``, ``"nic0"``) or a
        ``Harddrive``/``CD`` of this machine. On a running machine the devices'
        ``bootindex`` is changed at once (QEMU rewrites the firmware's boot order
        on reset), so a reboot or ``system_reset`` boots from it; on a stopped one
        it applies to the next start. Raises :class:`NotFoundError` when the
        machine has no such device and :class:`StateError` for a machine that
        boots a kernel directly (``kernel=``), where the firmware order is unused.
        """
        if self.kernel is not None:
            raise StateError(f"machine {self.name!r} boots its kernel directly (kernel=); the "
                             "firmware boot order does not apply", state="direct kernel boot")
        devices = self._boot_devices()
        chosen = self._resolve_boot(device, devices)
        old = self._boot_first
        self._boot_first = chosen
        order = self._boot_order()
        if self.state in (State.RUNNING, State.PAUSED):
            try:
                self._apply_boot_order(order)
            except QMPError as exc:
                self._boot_first = old
                raise StateError(f"{self.name}: changing the boot order failed: "
                                 f"{exc.description}") from exc
        self.log.info("boot order: %s", ", ".join(order))
        return order

    def _resolve_boot(self, device: str | Harddrive | CD,
                      devices: list[tuple[str, str]]) -> list[str]:
        from vmanager.storage import CD, Harddrive
        if isinstance(device, Harddrive):
            return [device.device_id(self._drive_index(device))]
        if isinstance(device, CD):
            if device is not self.cd:
                raise NotFoundError(f"{device!r} is not the CD of machine {self.name!r}")
            return ["cd0"]
        if device in BOOT_KINDS:
            chosen = [dev for dev, kind in devices if kind == device]
            if not chosen:
                raise NotFoundError(f"machine {self.name!r} has no {device} device to boot from")
            return chosen
        if any(dev == device for dev, _ in devices):
            return [str(device)]
        known = ", ".join(dev for dev, _ in devices) or "none"
        raise NotFoundError(f"machine {self.name!r} has no boot device {device!r} (kinds: "
                            f"{', '.join(BOOT_KINDS)}; devices: {known})")

    def _apply_boot_order(self, order: list[str]) -> None:
        # Clear first: QEMU refuses an index another device still holds.
        for dev in order:
            self._set_bootindex(dev, -1)
        for index, dev in enumerate(order, start=1):
            self._set_bootindex(dev, index)

    def _set_bootindex(self, device_id: str, index: int) -> None:
        self.qmp("qom-set", {"path": f"/machine/peripheral/{device_id}",
                             "property": "bootindex", "value": index})

    # -- memory ---------------------------------------------------------------------
    def memory_info(self) -> MemoryInfo:
        """RAM now: base, hot-plugged, after the balloon, ceiling and free slots (MiB)."""
        from vmanager.machine import _memory
        return _memory.info(self)

    def increase_ram(self, mib: int) -> MemoryInfo:
        """Hot-plug ``mib`` MiB of RAM (a ``pc-dimm``) into the running guest.

        ``mib`` is a positive multiple of 128 (Linux onlines memory in 128 MiB
        blocks). The guest must online it (the tiny guest does, by
        ``memhp_default_state=online``). Room comes from ``max_memory`` and
        ``memory_slots`` set before start (default ``memory`` + 1024 MiB, 8
        slots). Raises :class:`ConfigError` for a bad size or no room left.
        """
        from vmanager.machine import _memory
        return _memory.increase(self, mib)

    def balloon(self, mib: int) -> MemoryInfo:
        """Let the guest use only ``mib`` MiB (virtio balloon); grow back up to the total.

        Waits up to 30 s for the guest's balloon driver to get there, then returns
        the reading (check ``balloon`` in it).
        Raises :class:`ConfigError` when ``mib`` exceeds the plugged total.
        """
        from vmanager.machine import _memory
        return _memory.balloon(self, mib)

    def dump_memory(self, path: str | os.PathLike[str], *, paging: bool = False,
                    progress: DumpCallback | None = None,
                    timeout: float = 600.0) -> DumpResult:
        """Write guest memory to ``path`` as an ELF core (``dump-guest-memory``).

        The dump runs in the background in QEMU; ``progress`` is called with
        :class:`DumpProgress` readings until it is done. The file appears only
        when complete. Raises :class:`HostError` when ``path`` cannot be written
        (before QEMU is asked), :class:`QemuError` when the dump fails.
        """
        from vmanager.machine import _memory
        return _memory.dump(self, Path(path), paging=paging, progress=progress,
                            timeout=timeout)

    # -- chardevs -------------------------------------------------------------------
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
        from vmanager.machine import _chardevs
        return _chardevs.create(self, kind, path=Path(path) if path is not None else None,
                                port_name=port_name, chardev_id=chardev_id)

    def remove_chardev(self, chardev: Chardev | str, *, timeout: float = 30.0) -> None:
        """Remove a chardev made by :meth:`create_chardev` (and its guest port)."""
        from vmanager.machine import _chardevs
        _chardevs.remove(self, chardev, timeout=timeout)

    def chardevs(self) -> list[Chardev]:
        """Chardevs added by :meth:`create_chardev` that still exist."""
        return list(self._chardevs.values())

    # -- migration ------------------------------------------------------------------
    def migrate(self, target: StorageMixin, *, transport: str = "unix",
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
        from vmanager.machine import migration
        return migration.migrate(self, target, transport=transport, progress=progress,
                                 timeout=timeout, bandwidth_mib=bandwidth_mib,
                                 downtime_ms=downtime_ms)

    def save_state(self, path: str | os.PathLike[str], *, keep_running: bool = False,
                   progress: ProgressCallback | None = None,
                   timeout: float = 600.0) -> MigrationResult:
        """Save the running machine's whole state (RAM, devices) to the file ``path``.

        Disks are not copied: restore with the same disk images. Afterwards the
        machine stops, unless ``keep_running``. The file appears only when
        complete; on failure the machine keeps running and :class:`QemuError`
        is raised. Restore with :meth:`restore_state`.
        """
        from vmanager.machine import migration
        return migration.save(self, Path(path), keep_running=keep_running,
                              progress=progress, timeout=timeout)

    def restore_state(self, path: str | os.PathLike[str], *, timeout: float = 600.0) -> None:
        """Start this (stopped) machine from a file written by :meth:`save_state`.

        The machine must be built like the one that was saved. Raises
        :class:`NotFoundError` for a missing file, :class:`QemuError` (with
        QEMU's log) when the state does not load; nothing is left running then.
        """
        from vmanager.machine import migration
        migration.restore(self, Path(path), timeout=timeout)


def _bootindex(order: list[str], device_id: str) -> int | None:
    return order.index(device_id) + 1 if device_id in order else None


def _snapshot_name(name: object) -> str:
    checked = validate.name(name, what="snapshot name", max_len=128)
    if checked.isdigit():
        # QEMU looks snapshots up by id before name; an all-digit name could match an id.
        raise ConfigError(f"snapshot name {checked!r} is all digits and could be taken for a "
                          "snapshot id; add a letter")
    return checked
