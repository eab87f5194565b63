"""What a parsed lab holds: frozen specs of its machines, switches, routers and hosts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager.lab.servers import ServerSpec
from vmanager.lab.stretch import StretchSpec
from vmanager.net.impair import Impairment

if TYPE_CHECKING:
    from vmanager.lab.checkpoint import Checkpoint, Rollback


@dataclass(frozen=True)
class NicSpec:
    """One NIC of a machine and the switch it plugs into."""

    switch: str | None = None
    vlan: int | None = None
    vlans: tuple[int, ...] = ()
    mode: str = "macvtap"
    model: str = "virtio-net-pci"
    mac: str | None = None
    #: the frames the machine sends through this NIC are impaired so (netem)
    impair: Impairment = field(default_factory=Impairment)
    #: the NIC's MTU; ``None``: its switch's
    mtu: int | None = None


@dataclass(frozen=True)
class DiskSpec:
    """A disk: an image path, created with ``size`` when missing."""

    path: str
    size: str | None = None
    format: str = "qcow2"
    interface: str = "virtio"


@dataclass(frozen=True)
class MachineSpec:
    """A machine of the lab."""

    name: str
    guest: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    memory: int = 256
    cpus: int = 1
    accel: str = "auto"
    disks: tuple[DiskSpec, ...] = ()
    cd: str | None = None
    nics: tuple[NicSpec, ...] = ()
    server: str | None = None
    #: a ``cloud_init`` table (:meth:`vmanager.CloudInit.from_mapping`'s keys)
    cloud_init: dict[str, Any] | None = field(default=None, hash=False)
    #: ``bios`` (SeaBIOS) or ``uefi`` (OVMF; a fresh variable store each start)
    firmware: str = "bios"
    #: a template directory: the machine is its clone (resumes its guest, no boot)
    template: str | None = None

    def definition(self) -> dict[str, Any]:
        """The machine record's definition (see :func:`vmanager.state.machine_kwargs`)."""
        return {"guest": self.guest, "kernel": self.kernel, "initrd": self.initrd,
                "append": self.append, "memory": self.memory, "cpus": self.cpus,
                "accel": self.accel, "cd": self.cd, "cloud_init": self.cloud_init,
                "firmware": self.firmware, "template": self.template,
                "disks": [{"path": d.path, "size": d.size, "format": d.format,
                           "interface": d.interface} for d in self.disks],
                "nics": [{"switch": n.switch, "vlan": n.vlan, "vlans": list(n.vlans),
                          "mode": n.mode, "model": n.model, "mac": n.mac,
                          "impair": asdict(n.impair) if n.impair else None,
                          "mtu": n.mtu}
                         for n in self.nics]}


@dataclass(frozen=True)
class SwitchSpec:
    """A switch (Linux bridge)."""

    name: str
    vlan_filtering: bool = False
    vni: int | None = None
    stretch: StretchSpec | None = None  #: set in a server's part when stretched
    mtu: int | None = None
    #: an address the host gets on the switch (CIDR), so it reaches the machines there
    address: str | None = None


@dataclass(frozen=True)
class RouterSpec:
    """A router, bridged or NAT, whose LAN port plugs into ``switch``."""

    name: str
    mode: str
    trunk: str
    switch: str | None = None
    subnet: str | None = None
    trunk_address: str | None = None
    gateway: str | None = None
    dhcp: bool | None = None
    dns: bool | None = None
    server: str | None = None
    #: DHCP reservations: (MAC, IPv4 address) pairs
    dhcp_hosts: tuple[tuple[str, str], ...] = ()
    #: use a trunk that carries the host's default route (see lab._confine)
    force_trunk: bool = False


@dataclass(frozen=True)
class HostSpec:
    """An "outside" host: a namespace holding one end of a veth, addressed."""

    name: str
    port: str
    address: str | None = None
    server: str | None = None


@dataclass(frozen=True)
class Lab:
    """A parsed, validated lab file."""

    name: str
    path: Path
    digest: str
    machines: tuple[MachineSpec, ...] = ()
    switches: tuple[SwitchSpec, ...] = ()
    routers: tuple[RouterSpec, ...] = ()
    hosts: tuple[HostSpec, ...] = ()
    source: str = field(default="", repr=False)
    servers: tuple[ServerSpec, ...] = ()

    def checkpoint(self, name: str) -> Checkpoint:
        """Save every machine's state as checkpoint ``name`` (:mod:`~vmanager.lab.checkpoint`)."""
        from vmanager.lab import checkpoint
        return checkpoint.checkpoint(self, name)

    def rollback(self, name: str) -> Rollback:
        """Return every machine to checkpoint ``name``; the network stays as it is."""
        from vmanager.lab import checkpoint
        return checkpoint.rollback(self, name)

    def checkpoints(self) -> list[Checkpoint]:
        """The lab's checkpoints, oldest first."""
        from vmanager.lab import checkpoint
        return checkpoint.checkpoints(self)

    def delete_checkpoint(self, name: str) -> None:
        """Delete checkpoint ``name`` from every machine."""
        from vmanager.lab import checkpoint
        checkpoint.delete(self, name)

    def machine(self, name: str) -> MachineSpec:
        """The machine called ``name``."""
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(name)

    def migrate(self, machine: str, *, to: str, **options: Any) -> Any:
        """Move running ``machine`` to server ``to``, live.

        See :func:`vmanager.lab.migrate.migrate` (options, errors, the report).
        """
        from vmanager.lab.migrate import migrate
        return migrate(self, machine, to=to, **options)
