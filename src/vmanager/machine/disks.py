"""The harddrives of a Machine (``m.disks``): attached at launch, resized online.

Each :class:`~vmanager.Harddrive` becomes disk ``disk{i}`` (see
:mod:`vmanager.qemu.blockdev`); while the machine runs the drive is marked in
use, so offline changes to it are refused and :attr:`Harddrive.snapshots`
asks the running QEMU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmanager import validate
from vmanager.errors import ConfigError, NotFoundError, StorageError
from vmanager.machine.base import State
from vmanager.machine.part import Launch, MachineView, Part
from vmanager.qemu import cmdline
from vmanager.qemu.qmp import map_qmp_errors

if TYPE_CHECKING:
    from vmanager.qemu.cmdline import MachineSpec
    from vmanager.storage import Harddrive, SnapshotInfo


class Disks(Part):
    """The machine's harddrives, in order: ``harddrives[i]`` is QEMU's ``disk{i}``."""

    key = "disks"

    def __init__(self, vm: MachineView, harddrives: Harddrive | Sequence[Harddrive] | None
                 ) -> None:
        self._vm = vm
        drives: list[Harddrive] = []
        if harddrives is not None:
            from vmanager.storage import Harddrive
            drives = [harddrives] if isinstance(harddrives, Harddrive) else list(harddrives)
            for d in drives:
                if not isinstance(d, Harddrive):
                    raise ConfigError(f"harddrives takes Harddrive objects, got {d!r}")
        self.harddrives = drives
        self._attached: list[Harddrive] = []
        self._layers: list[tuple[Any, ...]] = []

    @property
    def name(self) -> str:
        """The machine's name (a :class:`~vmanager.storage.harddrive.DiskUser`)."""
        return self._vm.name

    # -- lifecycle ----------------------------------------------------------------------
    def prepare(self, launch: Launch) -> None:
        """Mark every drive in use and check its image chain (``qemu-img info``)."""
        self._layers = []
        for drive in self.harddrives:
            drive.attach(self)
            self._attached.append(drive)
            launch.undo.push(f"detach {drive.path}", self.teardown)
            self._layers.append(drive.layers())

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """One :class:`~vmanager.qemu.cmdline.DiskSpec` per drive, from the checked chains."""
        return replace(spec, disks=tuple(
            cmdline.DiskSpec(layers=tuple(layers), interface=d.interface, readonly=d.readonly)
            for d, layers in zip(self.harddrives, self._layers, strict=True)))

    def teardown(self) -> None:
        """The drives are free for offline use again."""
        for drive in self._attached:
            drive.detach(self)
        self._attached = []

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """A reattached machine uses its drives again (no offline changes meanwhile)."""
        for drive in self.harddrives:
            drive.attach(self)
            self._attached.append(drive)

    def release(self) -> None:
        """Detaching lets the drives go in this process; QEMU keeps them open."""
        self.teardown()

    # -- migration hand-over --------------------------------------------------------------
    def hand_over(self, other: Disks) -> list[Harddrive]:
        """Let ``other`` attach the drives both machines name (shared storage)."""
        shared = [d for d in self._attached if any(d is e for e in other.harddrives)]
        for drive in shared:
            drive.detach(self)
            self._attached.remove(drive)
        return shared

    def take_back(self, shared: list[Harddrive]) -> None:
        """Undo :meth:`hand_over` after a failed migration."""
        for drive in shared:
            drive.attach(self)
            self._attached.append(drive)

    # -- block nodes --------------------------------------------------------------------
    def block_nodes(self) -> dict[str, dict[str, Any]]:
        """QEMU's named block nodes (``query-named-block-nodes``) by node name."""
        nodes = self._vm.qmp("query-named-block-nodes", {"flat": True})
        return {n["node-name"]: n for n in nodes if n.get("node-name")}

    def index(self, drive: Harddrive | int) -> int:
        """The number of ``drive`` (a Harddrive of this machine or an index)."""
        if isinstance(drive, int) and not isinstance(drive, bool):
            if not 0 <= drive < len(self.harddrives):
                raise NotFoundError(f"machine {self._vm.name!r} has no harddrive number "
                                    f"{drive} (it has {len(self.harddrives)})")
            return drive
        for index, d in enumerate(self.harddrives):
            if d is drive:
                return index
        raise NotFoundError(f"{drive!r} is not a harddrive of machine {self._vm.name!r}")

    def device_ids(self) -> list[str]:
        """QEMU's device id of every drive, in order."""
        return [cmdline.disk_id(i) for i in range(len(self.harddrives))]

    def disk_snapshots(self, drive: Harddrive) -> list[SnapshotInfo]:
        """The internal snapshots of ``drive`` as the running QEMU sees them.

        :attr:`Harddrive.snapshots` calls this while the machine runs.
        """
        from vmanager.storage import SnapshotInfo
        node = cmdline.disk_id(self.index(drive))
        entry = self.block_nodes().get(node)
        if entry is None:
            raise NotFoundError(f"{self._vm.name}: block node {node} is gone")
        return [SnapshotInfo.from_json(s) for s in entry.get("image", {}).get("snapshots", [])]

    def resize(self, drive: Harddrive | int, size: int | str, *, shrink: bool = False) -> int:
        """Resize ``drive`` (a Harddrive of this machine or its index) to ``size``.

        A running (or frozen) machine's disk is resized online with QMP
        ``block_resize``, and the guest sees the new size at once (virtio-blk and
        scsi report it); a stopped machine's offline through
        :meth:`Harddrive.resize`. ``size`` is bytes or a string like ``"2G"``.
        Returns the new size in bytes.

        Shrinking loses whatever lies past the new end (under a running guest, its
        file systems break), so it is refused unless ``shrink=True``.

        Raises:
            StorageError: shrinking without ``shrink=True``; a read-only disk;
                qemu-img or QEMU refused.
            NotFoundError: ``drive`` is not this machine's.
            ConfigError: a bad size.
        """
        vm = self._vm
        index = self.index(drive)
        disk = self.harddrives[index]
        nbytes = validate.size(size, what="disk size")
        if not isinstance(shrink, bool):
            raise ConfigError(f"shrink= takes True or False, got {shrink!r}")
        if vm.state not in (State.RUNNING, State.PAUSED):
            return disk.resize(nbytes, shrink=shrink).virtual_size
        if disk.readonly:
            raise StorageError(f"{disk.path} is attached read-only; it cannot be resized")
        node = cmdline.disk_id(index)
        entry = self.block_nodes().get(node)
        if entry is None:
            raise NotFoundError(f"{vm.name}: block node {node} is gone")
        current = int(entry["image"]["virtual-size"])
        if nbytes == current:
            return current
        if nbytes < current and not shrink:
            raise StorageError(f"refusing to shrink {disk.path} from {current} to {nbytes} "
                               "bytes: data past the new end would be lost under the running "
                               "guest; pass shrink=True to do it anyway")
        with map_qmp_errors(f"{vm.name}: resizing {disk.path} to {nbytes} bytes failed",
                            StorageError):
            vm.qmp("block_resize", {"node-name": node, "size": nbytes})
        vm.log.info("resized %s online from %d to %d bytes", disk.path, current, nbytes)
        return nbytes
