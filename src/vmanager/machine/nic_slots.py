"""The NICs a Machine's QEMU has: one slot per NIC, looked up by object, index or id.

A slot ties a :class:`~vmanager.VirtualNic` to its QEMU ids (``nic{i}``,
``net{i}``) and says whether the machine made it (and so closes it). Slots are
what a reattach needs: :func:`rows` writes them for the record and
:func:`from_rows` adopts them back in another process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmanager.errors import ConfigError, NotFoundError, QMPError, StateError
from vmanager.qemu import cmdline

if TYPE_CHECKING:
    from vmanager.machine.part import MachineView
    from vmanager.net import VirtualNic


@dataclass
class Slot:
    """One NIC as QEMU knows it."""

    nic: VirtualNic
    index: int       #: N of ``netN`` / ``nicN``
    owned: bool      #: this machine created the VirtualNic and closes it
    #: device_del was sent but the guest has not released the device yet
    unplugging: bool = False

    @property
    def netdev(self) -> str:
        return cmdline.netdev_id(self.index)

    @property
    def device(self) -> str:
        return cmdline.nic_id(self.index)


def find(slots: Sequence[Slot], removed: set[int], nic: VirtualNic | int | str, *,
         machine: str) -> Slot:
    """The slot of a NIC given as a VirtualNic, an index into the NIC list or an id.

    An id is QEMU's device id (``"nic1"``) or the VirtualNic's name.
    """
    from vmanager.net import VirtualNic
    if isinstance(nic, bool):
        raise ConfigError(f"expected a VirtualNic, an index or an id, got {nic!r}")
    if isinstance(nic, int):
        if not -len(slots) <= nic < len(slots):
            raise NotFoundError(f"machine {machine!r} has no NIC at index {nic} "
                                f"(it has {len(slots)})")
        return slots[nic]
    if isinstance(nic, VirtualNic):
        for slot in slots:
            if slot.nic is nic:
                return slot
        if id(nic) in removed:
            raise StateError(f"{nic!r} was already removed from machine {machine!r}",
                             state="removed", required="attached")
        raise NotFoundError(f"{nic!r} is not a NIC of machine {machine!r}")
    if isinstance(nic, str):
        for slot in slots:
            if nic in (slot.device, slot.nic.name):
                return slot
        known = ", ".join(f"{s.device} ({s.nic.name})" for s in slots) or "none"
        raise NotFoundError(f"machine {machine!r} has no NIC {nic!r}; it has: {known}")
    raise ConfigError(f"expected a VirtualNic, an index or an id, got {nic!r}")


def rows(slots: Iterable[Slot]) -> list[dict[str, Any]]:
    """JSON-able rows that rebuild the slots (index, kernel names, MAC, owner)."""
    return [{"index": s.index, "name": s.nic.name, "namespace": s.nic.namespace,
             "mac": s.nic.mac, "mode": s.nic.mode, "model": s.nic.model, "mtu": s.nic.mtu,
             "owned": s.owned}
            for s in slots]


def from_rows(items: Iterable[Mapping[str, Any]]) -> list[Slot]:
    """Slots for the NICs of a machine another process started.

    NICs the machine made are adopted (closed here when unplugged or at stop);
    NICs its starter passed in stay theirs.
    """
    from vmanager.net import VirtualNic
    from vmanager.net import adopt as net_adopt
    slots: list[Slot] = []
    try:
        for item in items:
            nic = VirtualNic(item["name"], namespace=item.get("namespace"), mac=item["mac"],
                             mode=item.get("mode", "macvtap"),
                             model=item.get("model", "virtio-net-pci"), mtu=item.get("mtu"),
                             create=False)
            owned = bool(item.get("owned"))
            if owned:
                net_adopt.adopt_nic(nic)
            # else the NIC belongs to whoever passed it in (a lab record, a script): it
            # stays a description of their kernel objects, which this process never removes
            slots.append(Slot(nic, int(item["index"]), owned=owned))
    except BaseException:
        for slot in slots:
            net_adopt.release(slot.nic)
        raise
    return slots


def qemu_nic_indices(vm: MachineView) -> set[int]:
    """Indices of the NICs QEMU has now (plugged by any process)."""
    found = set()
    for prop in vm.qmp("qom-list", {"path": "/machine/peripheral"}):
        index = cmdline.nic_index(str(prop.get("name", "")))
        if index is not None:
            found.add(index)
    return found


def device_present(vm: MachineView, device: str) -> bool:
    """Whether QEMU still has device ``device``."""
    try:
        vm.qmp("qom-get", {"path": f"/machine/peripheral/{device}", "property": "type"})
    except QMPError:
        return False
    return True
