"""NICs of a Machine (``m.network``): its own network namespace and VirtualNics for QEMU.

At launch every NIC becomes ``-netdev tap,id=netN,fd=FD`` plus a
``-device MODEL,netdev=netN,mac=...,id=nicN`` (ids from :mod:`vmanager.qemu.cmdline`).
On a running machine NICs can be hot-plugged (:meth:`Nics.add`), unplugged
(:meth:`Nics.remove`) and have their link cut in QEMU (:meth:`Nics.set_link`).

Ownership: a VirtualNic this machine constructed (``nics=N``, ``add_nic()``
without an argument) is closed by the machine when it is unplugged or the
machine stops. A VirtualNic the caller passed in belongs to the caller, who
closes it (the machine creates it first if it is still new).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmanager.errors import (
    ConfigError,
    GuestError,
    NetworkError,
    QemuError,
    QMPError,
    StateError,
)
from vmanager.machine import nic_slots
from vmanager.machine.nic_slots import Slot
from vmanager.machine.part import Launch, MachineView, Part
from vmanager.qemu import cmdline

if TYPE_CHECKING:
    from vmanager.net import Namespace, VirtualNic
    from vmanager.qemu.cmdline import MachineSpec

#: The most NICs a machine takes at launch (hot-plugging is limited by free PCI slots).
MAX_NICS = 32
#: How long :meth:`Nics.remove` waits for the guest to release a device.
UNPLUG_TIMEOUT = 30.0


class Nics(Part):
    """``nics=N`` makes N VirtualNics in the machine's own namespace (named after it)."""

    key = "nics"

    def __init__(self, vm: MachineView, nics: int | Sequence[VirtualNic]) -> None:
        self._vm = vm
        self._slots: list[Slot] = []
        self._removed: set[int] = set()
        self._namespace: Namespace | None = None
        self._given_nics: list[VirtualNic] = []
        self._fds: list[tuple[Slot, int]] = []
        if isinstance(nics, bool):
            raise ConfigError(f"nics takes a count or a list of VirtualNic, got {nics!r}")
        if isinstance(nics, int):
            if not 0 <= nics <= MAX_NICS:
                raise ConfigError(f"nics must be between 0 and {MAX_NICS}, got {nics}")
            self._nic_count = nics
        else:
            from vmanager.net import VirtualNic
            given = list(nics)
            for nic in given:
                if not isinstance(nic, VirtualNic):
                    raise ConfigError(f"nics takes VirtualNic objects, got {nic!r}")
            if len({id(n) for n in given}) != len(given):
                raise ConfigError("nics lists the same VirtualNic twice")
            if len(given) > MAX_NICS:
                raise ConfigError(f"nics must list at most {MAX_NICS} VirtualNics")
            self._nic_count = 0
            self._given_nics = given
        self.nics: list[VirtualNic] = list(self._given_nics)

    @property
    def count(self) -> int:
        """How many NICs ``nics=N`` asked for (0 when VirtualNics were given)."""
        return self._nic_count

    @property
    def namespace(self) -> str:
        """The name of the machine's own network namespace."""
        return self._vm.name

    def device_ids(self) -> list[str]:
        """QEMU's device id of every NIC (before launch: the ids they will get)."""
        if self._slots:
            return [slot.device for slot in self._slots]
        return [cmdline.nic_id(i) for i in range(self._nic_count or len(self._given_nics))]

    @contextlib.contextmanager
    def held_back(self) -> Iterator[list[VirtualNic | None]]:
        """Launch without the NICs given at construction; yields what to :meth:`add` instead."""
        count, given = self._nic_count, self._given_nics
        self._nic_count, self._given_nics, self.nics = 0, [], []
        try:
            yield list(given) or [None] * count
        finally:
            self._nic_count, self._given_nics = count, given

    # -- launch -------------------------------------------------------------------
    def prepare(self, launch: Launch) -> None:
        """Make the namespace and the NICs; open the tap descriptors QEMU inherits."""
        self._fds = []
        if self._nic_count == 0 and not self._given_nics:
            return
        from vmanager.net import Lifecycle, VirtualNic, stable_mac
        launch.undo.push("remove the machine's NICs", self.teardown)
        if self._nic_count:
            self._ensure_namespace(adopt=False)
            for index in range(self._nic_count):
                nic = VirtualNic(namespace=self.namespace, mac=stable_mac(self._vm.name, index))
                self._slots.append(Slot(nic, index, owned=True))
        else:
            for index, nic in enumerate(self._given_nics):
                self._slots.append(Slot(nic, index, owned=False))
                if nic.state is Lifecycle.NEW:
                    nic.create()
        self.nics = [slot.nic for slot in self._slots]
        for slot in self._slots:
            fd = slot.nic.open_fd()
            launch.owned_fds.append(fd)
            launch.pass_fds.append(fd)
            self._fds.append((slot, fd))

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """A NicSpec per NIC, with the descriptor :meth:`prepare` opened."""
        return replace(spec, nics=tuple(cmdline.NicSpec(slot.index, fd, slot.nic.model,
                                                        slot.nic.mac, mtu=slot.nic.mtu)
                                        for slot, fd in self._fds))

    def _ensure_namespace(self, *, adopt: bool = True) -> None:
        """Create the machine's namespace.

        At launch an existing namespace of that name is refused: it may belong
        to something else, and the machine would remove it on stop. A running
        machine (``adopt=True``, e.g. re-attached) uses an existing one without
        taking ownership.
        """
        from vmanager.net import Namespace
        from vmanager.net.adopt import namespace_exists
        if self._namespace is not None:
            return
        if namespace_exists(self.namespace):
            if adopt:
                return
            raise NetworkError(f"network namespace {self.namespace!r} already exists; machine "
                               f"{self._vm.name!r} makes its own namespace of that name (remove "
                               "the old one, e.g. left by a crashed run, or rename the machine)")
        self._namespace = Namespace(self.namespace)

    def teardown(self) -> None:
        """Close the NICs this machine made and its namespace."""
        from vmanager.net import batch_removal
        self._fds = []
        failures: list[str] = []
        try:
            # NICs and namespace go in one kernel pass (or in the caller's batch,
            # e.g. a Group's teardown of many machines)
            with batch_removal():
                for slot in reversed(self._slots):
                    if slot.owned:
                        try:
                            slot.nic.close()
                        except NetworkError as exc:
                            failures.append(str(exc))
                self._slots = []
                self._removed = set()
                self.nics = list(self._given_nics)
                ns, self._namespace = self._namespace, None
                if ns is not None:
                    try:
                        ns.close()
                    except NetworkError as exc:
                        failures.append(str(exc))
        except NetworkError as exc:
            failures.append(str(exc))
        if failures:
            raise NetworkError(f"machine {self._vm.name!r}: removing its NICs left "
                               "something behind:\n" + "\n".join(failures))

    def runtime(self) -> dict[str, Any]:
        """Every NIC QEMU has (index, kernel names, MAC, who owns it) and the namespace."""
        return {"namespace": self._namespace is not None, "slots": nic_slots.rows(self._slots)}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """Take over the NICs and namespace of a machine another process started."""
        from vmanager.net import adopt as net_adopt
        namespace = None
        if runtime.get("namespace") and net_adopt.namespace_exists(self.namespace):
            namespace = net_adopt.adopt_namespace(self.namespace)
        try:
            self._slots = nic_slots.from_rows(runtime.get("slots") or ())
        except BaseException:
            if namespace is not None:
                net_adopt.release(namespace)
            raise
        self._namespace = namespace
        self.nics = [slot.nic for slot in self._slots]

    def release(self) -> None:
        """QEMU runs on with the NICs: this process lets them go without removing them."""
        from vmanager.net import adopt as net_adopt
        for slot in self._slots:
            net_adopt.release(slot.nic)
        if self._namespace is not None:
            net_adopt.release(self._namespace)
        self._namespace = None
        self._slots = []
        self._fds = []

    # -- looking NICs up ----------------------------------------------------------
    def _slot(self, nic: VirtualNic | int | str) -> Slot:
        return nic_slots.find(self._slots, self._removed, nic, machine=self._vm.name)

    def nic_id(self, nic: VirtualNic | int | str) -> str:
        """QEMU's device id of ``nic`` (``"nic0"``...), as used by QMP.

        Raises:
            NotFoundError: no such NIC on this machine.
        """
        return self._slot(nic).device

    # -- live changes -------------------------------------------------------------
    def add(self, nic: VirtualNic | None = None, *,
                model: str = "virtio-net-pci", timeout: float = 30.0) -> VirtualNic:
        """Hot-plug a NIC into the running machine; the guest sees a new interface.

        Without ``nic`` a VirtualNic is made in the machine's namespace (created
        now if the machine had none) with the next stable MAC
        (:func:`~vmanager.net.stable_mac` of the machine name and the first free
        index), and closed by the machine when unplugged or at stop. A given
        ``nic`` is created first if it is still new (then the machine closes it);
        ``model`` only applies to a NIC made here. Connect ``nic.port`` to a
        Switch to give it a network.

        >>> nic = m.add_nic()          # doctest: +SKIP
        >>> sw.connect(nic)            # doctest: +SKIP

        Raises:
            StateError: the machine is not running, or ``nic`` is closed.
            ConfigError: ``nic`` is attached already or its MAC is in use here.
            NetworkError, HostError: the VirtualNic could not be built.
            QMPError: QEMU refused (e.g. no free PCI slot); nothing is left behind.
        """
        from vmanager.net import Lifecycle, VirtualNic, stable_mac
        monitor = self._vm.monitor()
        if nic is not None and not isinstance(nic, VirtualNic):
            raise ConfigError(f"add_nic takes a VirtualNic or nothing, got {nic!r}")
        if nic is not None and any(s.nic is nic for s in self._slots):
            raise ConfigError(f"{nic!r} is already a NIC of machine {self._vm.name!r}")
        # QEMU's own list too: ids of NICs plugged by another process must not be reused.
        used = {s.index for s in self._slots} | nic_slots.qemu_nic_indices(self._vm)
        macs = {s.nic.mac for s in self._slots}
        index = next(i for i in range(len(used) + 1) if i not in used)
        created_ns = False
        if nic is None:
            while stable_mac(self._vm.name, index) in macs or index in used:
                index += 1
            created_ns = self._namespace is None
            self._ensure_namespace()
            created_ns = created_ns and self._namespace is not None
            # described only: it is made below, where a failure is rolled back
            nic = VirtualNic(namespace=self.namespace, mac=stable_mac(self._vm.name, index),
                             model=model, create=False)
            owned = True
        else:
            if nic.mac in macs:
                raise ConfigError(f"MAC {nic.mac} of {nic!r} is already used by a NIC of "
                                  f"machine {self._vm.name!r}")
            if nic.state is Lifecycle.CLOSED:
                raise StateError(f"cannot hot-plug {nic!r}: it is closed",
                                 state=nic.state, required=Lifecycle.CREATED)
            owned = False
        slot = Slot(nic, index, owned=owned)
        fdname = f"vmanager-{slot.netdev}"
        stage = "start"
        try:
            if nic.state is Lifecycle.NEW:
                nic.create()
            fd = nic.open_fd()
            try:
                monitor.send_fd(fd, fdname)
            finally:
                os.close(fd)  # QEMU holds its own copy now
            stage = "fd sent"
            self._vm.qmp("netdev_add", {"type": "tap", "id": slot.netdev, "fd": fdname},
                     timeout=timeout)
            stage = "netdev added"  # netdev_add consumed the named fd
            device: dict[str, object] = {"driver": nic.model, "id": slot.device,
                                         "netdev": slot.netdev, "mac": nic.mac}
            if nic.mtu and nic.model.startswith("virtio-net"):
                device["host_mtu"] = nic.mtu  # as at launch (cmdline.nic_args)
            self._vm.qmp("device_add", device, timeout=timeout)
        except BaseException:
            if stage == "netdev added":
                self._quietly("netdev_del", {"id": slot.netdev})
            elif stage == "fd sent":
                self._quietly("closefd", {"fdname": fdname})
            if owned:
                self._quietly_close(nic)
            if created_ns:
                self._drop_namespace()
            raise
        self._slots.append(slot)
        self._removed.discard(id(nic))
        self.nics.append(nic)
        self._vm.changed()
        self._vm.log.info("hot-plugged %s (%s, %s)", slot.device, nic.name, nic.mac)
        return nic

    def remove(self, nic: VirtualNic | int | str, *,
                timeout: float = UNPLUG_TIMEOUT) -> None:
        """Unplug a NIC from the running machine and wait until the guest released it.

        Sends ``device_del``, waits for QEMU's ``DEVICE_DELETED`` (the guest must
        acknowledge the ACPI unplug), removes the backend (``netdev_del``) and
        closes the VirtualNic if the machine made it. ``nic`` is a VirtualNic, an
        index into :attr:`nics` or an id (``"nic1"`` or the VirtualNic's name).

        Raises:
            StateError: the machine is not running, or the NIC was already removed.
            NotFoundError: no such NIC on this machine.
            GuestError: the guest did not release the device within ``timeout``
                seconds (the NIC stays listed; calling again waits again).
            QMPError: QEMU refused.
        """
        monitor = self._vm.monitor()
        slot = self._slot(nic)
        mark = monitor.event_mark()
        # absent already when a previous call timed out just before the guest let go
        if nic_slots.device_present(self._vm, slot.device):
            try:
                self._vm.qmp("device_del", {"id": slot.device}, timeout=timeout)
            except QMPError as exc:
                # QEMU 7 refuses a second device_del while the first is pending
                if not slot.unplugging:
                    raise
                self._vm.log.debug("device_del %s again: %s", slot.device, exc)
            slot.unplugging = True
            try:
                monitor.wait_event(
                    "DEVICE_DELETED", timeout=timeout, since=mark,
                    match=lambda ev: ev.get("data", {}).get("device") == slot.device)
            except QemuError as exc:
                if nic_slots.device_present(self._vm, slot.device):
                    raise GuestError(
                        f"machine {self._vm.name!r}: the guest did not release {slot.device} "
                        f"({slot.nic.name}) within {timeout} s; does it handle ACPI PCI "
                        "hot-unplug? Call del_nic() again to keep waiting") from exc
        self._vm.qmp("netdev_del", {"id": slot.netdev}, timeout=timeout)
        self._slots.remove(slot)
        self.nics = [n for n in self.nics if n is not slot.nic]
        self._removed.add(id(slot.nic))
        self._vm.changed()
        self._vm.log.info("unplugged %s (%s)", slot.device, slot.nic.name)
        if slot.owned:
            slot.nic.close()

    def set_link(self, nic: VirtualNic | int | str, up: bool) -> None:
        """Turn the NIC's link on or off inside QEMU (``set_link``).

        The guest sees carrier come and go; host links are not touched (use
        ``vmanager.interfaces[name].down()`` for those).

        Raises:
            StateError: the machine is not running.
            NotFoundError: no such NIC on this machine.
            QMPError: QEMU refused.
        """
        self._vm.monitor()
        if not isinstance(up, bool):
            raise ConfigError(f"nic_state takes up=True or False, got {up!r}")
        slot = self._slot(nic)
        self._vm.qmp("set_link", {"name": slot.device, "up": up})
        self._vm.log.info("link of %s %s", slot.device, "up" if up else "down")

    # -- helpers ------------------------------------------------------------------
    def _quietly(self, command: str, args: dict[str, Any]) -> None:
        """A rollback QMP call whose failure must not hide the original error."""
        try:
            self._vm.qmp(command, args, timeout=10)
        except QemuError as exc:
            self._vm.log.warning("rollback %s %s failed: %s", command, args, exc)

    def _quietly_close(self, nic: VirtualNic) -> None:
        try:
            nic.close()
        except NetworkError as exc:
            self._vm.log.warning("rollback: closing %r failed: %s", nic, exc)

    def _drop_namespace(self) -> None:
        ns, self._namespace = self._namespace, None
        if ns is not None:
            ns.close()
