"""VXLAN tunnel ports: one switch stretched over several servers.

A :class:`Vxlan` is a kernel ``vxlan`` link in unicast mode: no multicast group,
no controller. For every other server it gets one static forwarding entry with
the all-zero MAC (``bridge fdb append 00:00:00:00:00:00 dst REMOTE``), which
makes the kernel send broadcast, multicast and unknown-unicast frames to each
remote in turn (head-end replication); unicast to a known MAC goes to the one
remote it was learned from (``learning`` is on, so a guest that migrates is
found again as soon as it sends a frame; QEMU announces a migrated guest at
once). Enslaved to a switch's bridge on each server, the VXLAN links make one
layer-2 segment of the bridges: what containerlab's ``vxlan`` links and netlab's
multi-server plugin build.

The MTU: VXLAN adds 50 bytes on IPv4 (outer IPv4 20, UDP 8, VXLAN 8, inner
Ethernet 14), 70 on IPv6. A frame that does not fit the underlay after that is
dropped silently, so the link's MTU is set to the underlay's minus the overhead
(:func:`inner_mtu`). A bridge takes the smallest MTU of its ports, and guests
that send 1500-byte packets would then lose them: either raise the underlay's
MTU to 1550 (jumbo frames on the servers' network: the inner MTU stays 1500) or
lower the guests' MTU to what :attr:`Vxlan.mtu` says.

>>> with Vxlan("vx100", vni=100, local="192.0.2.1", remotes=["192.0.2.2"],
...            underlay="eth1", bridge="lan") as vx:    # doctest: +SKIP
...     vx.mtu
1450
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vmanager import validate
from vmanager.errors import ConfigError
from vmanager.net._netlink import (
    attr,
    delete_link,
    kernel_call,
    require,
    require_absent,
    rtnl,
)
from vmanager.net._resource import Resource, UndoStack

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IANA's VXLAN port
DEFAULT_PORT = 4789
VNI_MAX = (1 << 24) - 1
#: bytes VXLAN adds to an inner Ethernet frame, by IP version of the underlay
OVERHEAD = {4: 50, 6: 70}
ALL_ZERO_MAC = "00:00:00:00:00:00"
ETHERNET_MTU = 1500


def inner_mtu(underlay_mtu: int, version: int = 4) -> int:
    """The largest inner MTU a VXLAN over an underlay of ``underlay_mtu`` carries.

    >>> inner_mtu(1500), inner_mtu(1550), inner_mtu(1500, 6)
    (1450, 1500, 1430)
    """
    return underlay_mtu - OVERHEAD[version]


def check_vni(vni: object) -> int:
    """A VXLAN network identifier: an integer from 1 to 16777215."""
    if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= VNI_MAX:
        raise ConfigError(f"VXLAN VNI must be an integer from 1 to {VNI_MAX}, got {vni!r}")
    return vni


def check_port(port: object) -> int:
    """A UDP port: 1 to 65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"VXLAN UDP port must be an integer from 1 to 65535, got {port!r}")
    return port


def check_address(value: object, *, what: str) -> IPAddress:
    """A unicast IPv4/IPv6 address usable as a tunnel endpoint."""
    try:
        addr = ipaddress.ip_address(str(value)) if isinstance(value, str | ipaddress.IPv4Address
                                                              | ipaddress.IPv6Address) else None
    except ValueError:
        addr = None
    if addr is None:
        raise ConfigError(f"{what} must be an IPv4 or IPv6 address, got {value!r}")
    if addr.is_multicast or addr.is_unspecified:
        raise ConfigError(f"{what} must be a unicast address, got {value!r}")
    return addr


class Vxlan(Resource):
    """A unicast VXLAN link with a static flood entry per remote, optionally on a bridge.

    ``local`` is this server's address on the underlay, ``remotes`` the other
    servers' addresses (each one gets an all-zero forwarding entry), ``port``
    the UDP port (the same on every server), ``underlay`` the interface the
    tunnel is bound to (optional; its MTU sets the default :attr:`mtu`),
    ``bridge`` a bridge in the same namespace to enslave the link to, ``netns``
    the namespace to make it in (``None``: the caller's). Constructing it makes
    the link (``create=False`` only describes it, for :meth:`create` or ``with``).

    Raises:
        ConfigError: a bad name, VNI, port or address; the name is taken; local
            and remotes of different IP versions; ``mtu`` out of range.
        NotFoundError: ``underlay`` or ``bridge`` does not exist.
        LinkError: the kernel refused (e.g. another VXLAN has the same VNI and port).
    """

    _kind = "vxlan"

    def __init__(self, name: str, *, vni: int, local: str, remotes: Iterable[str] = (),
                 port: int = DEFAULT_PORT, underlay: str | None = None,
                 bridge: str | None = None, mtu: int | None = None,
                 netns: str | None = None, create: bool = True) -> None:
        super().__init__()
        self.name = validate.ifname(name, what="VXLAN link name")
        self.vni = check_vni(vni)
        self.port = check_port(port)
        self.local = check_address(local, what="VXLAN local address")
        self._remotes: list[IPAddress] = []
        for r in remotes:
            self._remotes.append(self._check_remote(r))
        self.underlay = validate.ifname(underlay, what="underlay interface") if underlay \
            else None
        self.bridge = validate.ifname(bridge, what="bridge") if bridge else None
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)
                                or not 68 <= mtu <= 65535):
            raise ConfigError(f"VXLAN MTU must be an integer from 68 to 65535, got {mtu!r}")
        self._mtu = mtu
        self.netns = netns
        self._init_done(create)

    def __repr__(self) -> str:
        return (f"Vxlan({self.name!r}, vni={self.vni}, local={str(self.local)!r}, "
                f"remotes={[str(r) for r in self._remotes]}, port={self.port})")

    def _label(self) -> str:
        return f"VXLAN {self.name!r}"

    def _check_remote(self, value: object) -> IPAddress:
        addr = check_address(value, what="VXLAN remote address")
        if addr.version != self.local.version:
            raise ConfigError(f"VXLAN remote {addr} is IPv{addr.version} but the local address "
                              f"{self.local} is IPv{self.local.version}")
        if addr == self.local:
            raise ConfigError(f"VXLAN remote {addr} is the local address itself")
        if addr in self._remotes:
            raise ConfigError(f"VXLAN remote {addr} is given twice")
        return addr

    @property
    def remotes(self) -> tuple[str, ...]:
        """The other tunnel endpoints, as strings."""
        return tuple(str(r) for r in self._remotes)

    @property
    def mtu(self) -> int:
        """The link's MTU: given, or the underlay's minus :data:`OVERHEAD` (after create)."""
        if self._mtu is None:
            return inner_mtu(ETHERNET_MTU, self.local.version)
        return self._mtu

    @property
    def ifname(self) -> str:
        """The link's name (so a Vxlan can be passed where a port is expected)."""
        return self.name

    def _build(self, undo: UndoStack) -> None:
        with rtnl(self.netns) as ipr:
            require_absent(ipr, self.name, self.netns)
            link_index = None
            if self.underlay is not None:
                link_index = require(ipr, self.underlay, self.netns, what="underlay interface")
                if self._mtu is None:
                    under = ipr.link("get", index=link_index)[0]
                    self._mtu = inner_mtu(int(attr(under, "IFLA_MTU")), self.local.version)
            if self._mtu is None:
                self._mtu = inner_mtu(ETHERNET_MTU, self.local.version)
            bridge_index = None
            if self.bridge is not None:
                bridge_index = require(ipr, self.bridge, self.netns, what="bridge")
            spec: dict[str, Any] = {"ifname": self.name, "kind": "vxlan",
                                    "vxlan_id": self.vni, "vxlan_port": self.port,
                                    "vxlan_learning": 1, "mtu": self._mtu}
            spec["vxlan_local" if self.local.version == 4 else "vxlan_local6"] = str(self.local)
            if link_index is not None:
                spec["vxlan_link"] = link_index
            with kernel_call(f"add VXLAN (VNI {self.vni}, port {self.port})", self.name,
                             self.netns):
                ipr.link("add", **spec)
            undo.push(f"delete VXLAN {self.name}", lambda: delete_link(self.name, self.netns))
            index = require(ipr, self.name, self.netns)
            for remote in self._remotes:
                self._flood_entry(ipr, index, remote, "append")
            with kernel_call("set up", self.name, self.netns):
                if bridge_index is not None:
                    ipr.link("set", index=index, master=bridge_index, state="up")
                else:
                    ipr.link("set", index=index, state="up")
        log.info("VXLAN %s: VNI %d port %d, %s -> %s, MTU %d%s", self.name, self.vni,
                 self.port, self.local, ", ".join(self.remotes) or "(no remotes yet)",
                 self._mtu, f" on bridge {self.bridge}" if self.bridge else "")

    def _flood_entry(self, ipr: Any, index: int, remote: IPAddress, command: str) -> None:
        with kernel_call(f"{'add' if command == 'append' else 'remove'} forwarding entry to "
                         f"{remote} on", self.name, self.netns):
            try:
                ipr.fdb(command, ifindex=index, lladdr=ALL_ZERO_MAC, dst=str(remote))
            except NetlinkError as exc:
                if command == "del" and exc.code == errno.ENOENT:
                    return
                raise

    def add_remote(self, address: str) -> None:
        """Send this segment's floods to one more server too.

        Raises:
            StateError: not created. ConfigError: bad or duplicate address.
        """
        self._require_created("add a remote to")
        remote = self._check_remote(address)
        with rtnl(self.netns) as ipr:
            self._flood_entry(ipr, require(ipr, self.name, self.netns), remote, "append")
        self._remotes.append(remote)

    def remove_remote(self, address: str) -> None:
        """Stop flooding to ``address``.

        Raises:
            StateError: not created. ConfigError: not a remote of this link.
        """
        self._require_created("remove a remote from")
        remote = check_address(address, what="VXLAN remote address")
        if remote not in self._remotes:
            raise ConfigError(f"{remote} is not a remote of VXLAN {self.name!r}")
        with rtnl(self.netns) as ipr:
            self._flood_entry(ipr, require(ipr, self.name, self.netns), remote, "del")
        self._remotes.remove(remote)


def flood_remotes(name: str, netns: str | None = None) -> list[str]:
    """The remotes of VXLAN link ``name`` as the kernel has them (its all-zero entries)."""
    with rtnl(netns) as ipr:
        index = require(ipr, name, netns)
        found = []
        for entry in ipr.fdb("dump", ifindex=index):
            if attr(entry, "NDA_LLADDR") == ALL_ZERO_MAC and attr(entry, "NDA_DST"):
                found.append(str(attr(entry, "NDA_DST")))
        return sorted(found)
