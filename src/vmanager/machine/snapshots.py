"""Whole-machine snapshots (``m.snapshots``): RAM, device state and every writable disk.

Snapshots keep RAM and device state in the first writable qcow2 disk and a
disk snapshot in every writable qcow2 disk. **A machine without a writable
qcow2 disk gets a state disk**: a small qcow2 file ``vmstate.qcow2`` in the
machine's state directory (``$VMANAGER_STATE_DIR/machines/<name>/``), added
with ``blockdev-add`` on the first snapshot and never attached to a guest
device, so the guest does not see it. It stays between runs, so a later run
of the same machine lists and loads its snapshots;
:meth:`Snapshots.delete_state_disk` removes it. A writable raw disk cannot be
snapshotted, so a machine with one gets a
:class:`~vmanager.errors.StorageError` instead of a snapshot that would not
cover it.

``m.snapshots()`` lists them (the seed's call); ``m.snapshots.save(name)``,
``.load(name)`` and ``.delete(name)`` are what ``m.snapshot()``,
``m.load_snapshot()`` and ``m.delete_snapshot()`` call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import paths, validate
from vmanager.errors import NotFoundError, StateError, StorageError
from vmanager.machine import _jobs
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.machine.state import STATE_DISK_NAME
from vmanager.qemu.cmdline import STATE_NODE
from vmanager.qemu.qmp import map_qmp_errors
from vmanager.storage.harddrive import SNAPSHOT_NAME_MAX

if TYPE_CHECKING:
    from vmanager.machine.disks import Disks
    from vmanager.storage import SnapshotInfo

#: Virtual size of the state disk; RAM state is stored past its end, so it stays small.
STATE_DISK_SIZE = 1 << 20
#: Seconds a snapshot job may take (TCG guests with much RAM are slow to save).
SNAPSHOT_TIMEOUT = 600.0


class Snapshots(Part):
    """The running machine's whole-machine snapshots; call it to list them."""

    key = "snapshots"

    def __init__(self, vm: MachineView, disks: Disks,
                 clone_disks: Callable[[], list[str]] = list) -> None:
        self._vm = vm
        self._disks = disks
        #: a clone's writable template disks (qcow2 overlays), beside its harddrives
        self._clone_disks = clone_disks
        self._state_node = False

    def __call__(self) -> list[SnapshotInfo]:
        """Whole-machine snapshots (RAM, devices and disks), oldest first."""
        return self.entries()

    def teardown(self) -> None:
        """The state disk's node goes with QEMU."""
        self._state_node = False

    def runtime(self) -> dict[str, Any]:
        """Whether the state disk is open in QEMU."""
        return {"state_node": self._state_node}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """Open state disk or not, as the process that started QEMU left it."""
        self._state_node = bool(runtime.get("state_node"))

    @property
    def state_disk(self) -> Path:
        """Where a machine without a writable qcow2 disk keeps snapshot state."""
        return paths.state_dir() / "machines" / self._vm.name / STATE_DISK_NAME

    def delete_state_disk(self) -> None:
        """Remove the state disk and so every snapshot in it (machine not running)."""
        state = self._vm.state
        if state in (State.RUNNING, State.PAUSED):
            raise StateError(f"machine {self._vm.name!r} is running; stop it before deleting "
                             "its state disk", state=state, required=State.DEFINED)
        self.state_disk.unlink(missing_ok=True)
        # the machine's directory goes too once nothing else is in it
        with contextlib.suppress(OSError):
            self.state_disk.parent.rmdir()

    def _nodes(self, *, create: bool) -> list[str]:
        """Nodes a whole-machine snapshot covers, the vmstate node first; [] if none yet."""
        vm = self._vm
        writable = [(i, d) for i, d in enumerate(self._disks.harddrives) if not d.readonly]
        raw = [str(d.path) for _, d in writable if d.format != "qcow2"]
        if raw:
            raise StorageError(f"machine {vm.name!r} has writable raw disks ({', '.join(raw)}) "
                               "that internal snapshots cannot cover; use qcow2 or attach them "
                               "read-only")
        if writable or self._clone_disks():
            return [self._disks.device_ids()[i] for i, _ in writable] + self._clone_disks()
        if not self._state_node and STATE_NODE in self._disks.block_nodes():
            self._state_node = True  # added by an earlier process attached to this QEMU
        if not self._state_node:
            path = self.state_disk
            if not path.exists():
                if not create:
                    return []
                from vmanager.storage import qemu_img
                paths.private_dir(path.parent)
                qemu_img.create(path, fmt="qcow2", size=STATE_DISK_SIZE)
                vm.log.info("created state disk %s for snapshots", path)
            with map_qmp_errors(f"{vm.name}: cannot open state disk {path}", StorageError):
                vm.qmp("blockdev-add", {"driver": "qcow2", "node-name": STATE_NODE,
                                        "file": {"driver": "file", "filename": str(path)}})
            self._state_node = True
            vm.changed()
        return [STATE_NODE]

    def entries(self) -> list[SnapshotInfo]:
        """Whole-machine snapshots (RAM, devices and disks), oldest first."""
        from vmanager.storage import SnapshotInfo
        self._vm.monitor()
        nodes = self._nodes(create=False)
        if not nodes:
            return []
        entry = self._disks.block_nodes().get(nodes[0], {})
        found = [SnapshotInfo.from_json(s) for s in entry.get("image", {}).get("snapshots", [])]
        return [s for s in found if s.vm_state_size > 0]

    def save(self, name: str, *, overwrite: bool = False,
             timeout: float = SNAPSHOT_TIMEOUT) -> SnapshotInfo:
        """Snapshot the running machine: RAM, device state and every writable disk.

        Runs QMP ``snapshot-save`` with explicit nodes (see the module docstring
        for where state goes); the guest pauses while it saves, then carries on.
        Raises :class:`StorageError` if ``name`` exists (unless ``overwrite``) or
        a disk cannot be snapshotted, :class:`ConfigError` for a bad name.
        """
        vm = self._vm
        name = validate.snapshot_name(name, max_len=SNAPSHOT_NAME_MAX)
        vm.monitor()
        nodes = self._nodes(create=True)
        if any(s.name == name for s in self.entries()):
            if not overwrite:
                raise StorageError(f"machine {vm.name!r} already has a snapshot {name!r}; "
                                   "pass overwrite=True or delete it first")
            self.delete(name)
        with map_qmp_errors(f"{vm.name}: snapshot {name!r} failed", StorageError):
            _jobs.run_job(vm.monitor(), "snapshot-save",
                          {"tag": name, "vmstate": nodes[0], "devices": nodes},
                          prefix="save", timeout=timeout)
        made = next((s for s in self.entries() if s.name == name), None)
        if made is None:
            raise StorageError(f"{vm.name}: snapshot-save reported success but there is no "
                               f"snapshot {name!r}")
        vm.log.info("snapshot %s saved (%d bytes of state)", name, made.vm_state_size)
        return made

    def load(self, name: str, *, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        """Return the running machine to snapshot ``name`` (RAM, devices, disks).

        A running machine keeps running from the snapshot's moment; a frozen one
        stays frozen. Raises :class:`NotFoundError` naming the snapshots that do
        exist; the machine is untouched then.
        """
        vm = self._vm
        name = validate.snapshot_name(name, max_len=SNAPSHOT_NAME_MAX)
        vm.monitor()
        self._require(name)
        nodes = self._nodes(create=False)
        with map_qmp_errors(f"{vm.name}: loading snapshot {name!r} failed", StorageError):
            _jobs.run_job(vm.monitor(), "snapshot-load",
                          {"tag": name, "vmstate": nodes[0], "devices": nodes},
                          prefix="load", timeout=timeout)
        vm.log.info("snapshot %s loaded", name)

    def delete(self, name: str, *, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        """Delete whole-machine snapshot ``name`` from every disk that holds it.

        Raises :class:`NotFoundError` if there is none of that name.
        """
        vm = self._vm
        name = validate.snapshot_name(name, max_len=SNAPSHOT_NAME_MAX)
        vm.monitor()
        self._require(name)
        nodes = self._nodes(create=False)
        with map_qmp_errors(f"{vm.name}: deleting snapshot {name!r} failed", StorageError):
            _jobs.run_job(vm.monitor(), "snapshot-delete",
                          {"tag": name, "devices": nodes}, prefix="delete", timeout=timeout)
        vm.log.info("snapshot %s deleted", name)

    def _require(self, name: str) -> None:
        have = self.entries()
        if not any(s.name == name for s in have):
            names = ", ".join(repr(s.name) for s in have) or "none"
            raise NotFoundError(f"machine {self._vm.name!r} has no snapshot {name!r} "
                                f"(snapshots: {names})")
