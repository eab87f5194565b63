"""The boot order of a Machine (``m.boot``): which disk, CD or NIC the firmware tries first.

Disks and the CD get their ``bootindex`` on the command line; NICs get theirs
over QMP once QEMU runs (QEMU rewrites the firmware's boot order on reset),
which is also how a running machine's order changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmanager.errors import NotFoundError, QemuError, QMPError, StateError
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.qemu import cmdline
from vmanager.qemu.qmp import map_qmp_errors

if TYPE_CHECKING:
    from vmanager.machine.cdrom import CdDrive
    from vmanager.machine.disks import Disks
    from vmanager.machine.nics import Nics
    from vmanager.qemu.cmdline import MachineSpec
    from vmanager.storage import CD, Harddrive

#: What ``change_boot_device`` accepts as a kind.
BOOT_KINDS = ("disk", "cd", "network")


class BootOrder(Part):
    """Devices asked for first, then every other bootable device in its default order."""

    key = "boot"

    def __init__(self, vm: MachineView, *, disks: Disks, cdrom: CdDrive, nics: Nics,
                 direct_kernel: Callable[[], bool], incoming: Callable[[], bool]) -> None:
        self._vm = vm
        self._disks = disks
        self._cdrom = cdrom
        self._nics = nics
        self._direct_kernel = direct_kernel
        self._incoming = incoming
        self._first: list[str] = []

    def devices(self) -> list[tuple[str, str]]:
        """(device id, kind) of every device that can boot, in default order."""
        found = [(dev, "disk") for dev in self._disks.device_ids()]
        if self._cdrom.present:
            found.append(("cd0", "cd"))
        return found + [(dev, "network") for dev in self._nics.device_ids()]

    def order(self) -> list[str]:
        """Device ids in boot order."""
        devices = [dev for dev, _ in self.devices()]
        first = [d for d in self._first if d in devices]
        return first + [d for d in devices if d not in first]

    # -- hooks ------------------------------------------------------------------------
    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """``bootindex`` of the disks and the CD (NICs get theirs after launch)."""
        order = self.order()

        def index(dev: str) -> int | None:
            return order.index(dev) + 1 if dev in order else None

        # by position: a clone's disks from its template follow the machine's own
        disks = tuple(replace(d, bootindex=index(cmdline.disk_id(i)))
                      for i, d in enumerate(spec.disks))
        cd = replace(spec.cd, bootindex=index("cd0")) if spec.cd is not None else None
        return replace(spec, disks=disks, cd=cd)

    def after_launch(self) -> None:
        """A boot order that puts NICs first is applied now; it holds from the next reset."""
        nic_first = [d for d, kind in self.devices() if kind == "network" and d in self._first]
        if nic_first and not self._direct_kernel() and not self._incoming():
            try:
                self._apply(self.order())
            except QemuError as exc:
                self._vm.log.warning("could not apply boot order %s: %s", self.order(), exc)

    def runtime(self) -> dict[str, Any]:
        """The devices asked for first."""
        return {"first": list(self._first)}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """The order another process set."""
        self._first = [str(d) for d in runtime.get("first") or ()]

    # -- changing ---------------------------------------------------------------------
    def change(self, device: str | Harddrive | CD) -> list[str]:
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
        vm = self._vm
        if self._direct_kernel():
            raise StateError(f"machine {vm.name!r} boots its kernel directly (kernel=); the "
                             "firmware boot order does not apply", state="direct kernel boot")
        chosen = self._resolve(device, self.devices())
        old = self._first
        self._first = chosen
        order = self.order()
        if vm.state in (State.RUNNING, State.PAUSED):
            with map_qmp_errors(f"{vm.name}: changing the boot order failed", StateError):
                try:
                    self._apply(order)
                except QMPError:
                    self._first = old
                    raise
            vm.changed()
        vm.log.info("boot order: %s", ", ".join(order))
        return order

    def _resolve(self, device: str | Harddrive | CD,
                 devices: list[tuple[str, str]]) -> list[str]:
        from vmanager.storage import CD, Harddrive
        name = self._vm.name
        if isinstance(device, Harddrive):
            return [self._disks.device_ids()[self._disks.index(device)]]
        if isinstance(device, CD):
            if device is not self._cdrom.cd:
                raise NotFoundError(f"{device!r} is not the CD of machine {name!r}")
            return ["cd0"]
        if device in BOOT_KINDS:
            chosen = [dev for dev, kind in devices if kind == device]
            if not chosen:
                raise NotFoundError(f"machine {name!r} has no {device} device to boot from")
            return chosen
        if any(dev == device for dev, _ in devices):
            return [str(device)]
        known = ", ".join(dev for dev, _ in devices) or "none"
        raise NotFoundError(f"machine {name!r} has no boot device {device!r} (kinds: "
                            f"{', '.join(BOOT_KINDS)}; devices: {known})")

    def _apply(self, order: list[str]) -> None:
        # Clear first: QEMU refuses an index another device still holds.
        for dev in order:
            self._set_bootindex(dev, -1)
        for index, dev in enumerate(order, start=1):
            self._set_bootindex(dev, index)

    def _set_bootindex(self, device_id: str, index: int) -> None:
        self._vm.qmp("qom-set", {"path": f"/machine/peripheral/{device_id}",
                                 "property": "bootindex", "value": index})

