"""The CD drive of a Machine (``m.cdrom``): the ISO at start, eject and change while it runs.

A machine started with ``cd=`` has drive ``cd0`` (a tray QMP can open). The
medium's block nodes are remembered (and recorded for a reattach), so eject
and change work from any process.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmanager.errors import ConfigError, NotFoundError, QMPError, StateError, StorageError
from vmanager.machine.base import State
from vmanager.machine.part import Launch, MachineView, Part
from vmanager.qemu import cmdline
from vmanager.qemu.qmp import map_qmp_errors

if TYPE_CHECKING:
    from vmanager.qemu.cmdline import MachineSpec
    from vmanager.storage import CD, CDUser

CD_DRIVE = cmdline.cd_id(0)


class CdDrive(Part):
    """``cd`` is the CD in the drive (or the one to start with); ``None`` when empty."""

    key = "cdrom"

    def __init__(self, vm: MachineView, cd: CD | None, *, user: CDUser | None = None) -> None:
        if cd is not None:
            from vmanager.storage import CD
            if not isinstance(cd, CD):
                raise ConfigError(f"cd takes one CD object, got {cd!r}")
        self._vm = vm
        #: who the CD is in the drive of (the Machine: ``cd.eject(machine=m)`` names it)
        self._user: CDUser = user if user is not None else self
        self.cd = cd
        self.drive = False           # the running machine has a CD drive (cd0)
        self._nodes: list[str] = []  # nodes of the medium in it, top first
        self._media = itertools.count(1)

    @property
    def present(self) -> bool:
        """Whether the machine has (or will start with) a CD drive."""
        return self.cd is not None or self.drive

    @property
    def name(self) -> str:
        """The machine's name (a :class:`~vmanager.storage.CDUser`)."""
        return self._vm.name

    def prepare(self, launch: Launch) -> None:
        """The CD knows it is in this machine's drive (so ``cd.eject()`` finds it)."""
        if self.cd is not None:
            self.cd.attach(self._user)
            launch.undo.push(f"detach {self.cd.path}", self._detach_cd)

    def _detach_cd(self) -> None:
        if self.cd is not None:
            self.cd.detach(self._user)

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """The drive with the ISO, when there is one."""
        if self.cd is None:
            return spec
        if not self.cd.path.is_file():
            raise NotFoundError(f"ISO image {self.cd.path} does not exist")
        return replace(spec, cd=cmdline.CdSpec(str(self.cd.path), interface=self.cd.interface))

    def after_launch(self) -> None:
        """Remember the medium's nodes, so eject removes them."""
        if self.cd is not None:
            self.drive = True
            self._nodes = [CD_DRIVE, f"{CD_DRIVE}-file"]

    def teardown(self) -> None:
        """No drive until the next start."""
        self._detach_cd()
        self.drive = False
        self._nodes = []

    def release(self) -> None:
        """This process lets go; the CD stays in the running machine's drive."""
        self._detach_cd()

    def runtime(self) -> dict[str, Any]:
        """The drive, the medium's nodes and the ISO's path."""
        return {"drive": self.drive, "nodes": list(self._nodes),
                "path": str(self.cd.path) if self.cd is not None else None,
                "interface": self.cd.interface if self.cd is not None else None,
                "media": self._next_media()}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """Take over the drive and medium of a machine another process started."""
        from vmanager.storage import CD
        self.drive = bool(runtime.get("drive"))
        self._nodes = [str(n) for n in runtime.get("nodes") or ()]
        self._media = itertools.count(int(runtime.get("media") or 1))
        path = runtime.get("path")
        self.cd = CD(path, interface=runtime.get("interface") or "ide") if path else None
        if self.cd is not None:
            self.cd.attach(self._user)

    def _next_media(self) -> int:
        n = next(self._media)
        self._media = itertools.count(n)
        return n

    # -- eject and change -------------------------------------------------------------
    def eject(self) -> None:
        """Eject the CD (the seed's ``eject``: it calls :meth:`CD.eject`).

        On a running machine the tray opens and the medium is removed: the guest
        sees an empty drive. A stopped machine just forgets its CD for the next
        start. Raises :class:`StateError` when there is no CD to eject.
        """
        vm = self._vm
        if vm.state not in (State.RUNNING, State.PAUSED):
            if self.cd is None:
                raise StateError(f"machine {vm.name!r} has no CD to eject", state="no CD")
            self.cd = None
            return
        if self.cd is None or not self.drive or not self._nodes:
            raise StateError(f"machine {vm.name!r} has no CD in its drive to eject",
                             state="no CD", required="a CD in the drive")
        self.cd.eject(machine=self._user)

    def eject_cd(self, cd: CD) -> None:
        """Take ``cd`` out of the running machine's drive; what :meth:`CD.eject` calls.

        Raises :class:`StateError` when ``cd`` is not in this machine's drive,
        :class:`StorageError` when QEMU refuses.
        """
        vm = self._vm
        vm.require(State.RUNNING, State.PAUSED, action="eject a CD")
        if cd is not self.cd or not self._nodes:
            raise StateError(f"{cd!r} is not in the drive of machine {vm.name!r}",
                             state="not in the drive", required="in the drive")
        with map_qmp_errors(f"{vm.name}: ejecting the CD failed", StorageError):
            vm.qmp("blockdev-open-tray", {"id": CD_DRIVE, "force": True})
            vm.qmp("blockdev-remove-medium", {"id": CD_DRIVE})
        self._drop_medium_nodes()
        cd.detach(self._user)
        self.cd = None
        vm.changed()
        vm.log.info("ejected %s", cd)

    def change(self, cd: CD) -> None:
        """Put ``cd`` in the CD drive of the running machine (replacing any medium).

        The guest sees a media change and reads the new ISO. On a stopped
        machine it sets the CD for the next start. Raises :class:`StateError`
        if the running machine was started without a CD drive (give ``cd=``).
        """
        from vmanager.storage import CD
        vm = self._vm
        if not isinstance(cd, CD):
            raise ConfigError(f"change_cd takes a CD object, got {cd!r}")
        if vm.state not in (State.RUNNING, State.PAUSED):
            self.cd = cd
            return
        if not self.drive:
            raise StateError(f"machine {vm.name!r} was started without a CD drive; give it "
                             "cd= before start_vm()", state="no CD drive")
        if not cd.path.is_file():
            raise NotFoundError(f"ISO image {cd.path} does not exist")
        node = cmdline.cd_medium_node(next(self._media))
        with map_qmp_errors(f"{vm.name}: changing the CD failed", StorageError):
            vm.qmp("blockdev-open-tray", {"id": CD_DRIVE, "force": True})
            if self._nodes:
                vm.qmp("blockdev-remove-medium", {"id": CD_DRIVE})
                self._drop_medium_nodes()
            vm.qmp("blockdev-add", {"driver": "raw", "node-name": node, "read-only": True,
                                    "file": {"driver": "file", "filename": str(cd.path),
                                             "read-only": True}})
        with map_qmp_errors(f"{vm.name}: inserting {cd.path} failed", StorageError):
            try:
                vm.qmp("blockdev-insert-medium", {"id": CD_DRIVE, "node-name": node})
            except QMPError:
                vm.quiet("blockdev-del", {"node-name": node})
                raise
        self._nodes = [node]
        if self.cd is not None:
            self.cd.detach(self._user)
        self.cd = cd
        cd.attach(self._user)
        vm.changed()
        with map_qmp_errors(f"{vm.name}: closing the CD tray failed", StorageError):
            vm.qmp("blockdev-close-tray", {"id": CD_DRIVE})
        vm.log.info("inserted %s", cd)

    def _drop_medium_nodes(self) -> None:
        for node in self._nodes:
            self._vm.quiet("blockdev-del", {"node-name": node})
        self._nodes = []
