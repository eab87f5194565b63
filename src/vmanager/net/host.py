"""The host's interfaces and routes, and running a host command.

:func:`interfaces` lists the physical NICs, :func:`all_links` every link.

>>> eth0 = interfaces()["eth0"]          # doctest: +SKIP
>>> eth0.ip, eth0.gateway                # doctest: +SKIP
(IPv4Address('10.0.2.15'), IPv4Address('10.0.2.2'))
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vmanager import hostcmd, validate
from vmanager.errors import CommandError, ConfigError, HostError
from vmanager.net._netlink import attr, kernel_call, require, rtnl
from vmanager.net._nsexec import in_netns

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAIN_TABLE = 254


@dataclass(frozen=True)
class CommandResult:
    """What a finished host command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def sys_command(argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
                netns: str | None = None, input: str | None = None) -> CommandResult:
    """Run a host command (an argv list, never a shell string) and return its result.

    ``netns`` runs it inside that network namespace (entered by a child process).

    Raises:
        ConfigError: ``argv`` is a string or empty.
        HostError: the program does not exist or cannot be executed.
        CommandError: it exited non-zero (with ``check``) or outlived ``timeout``;
            carries argv, exit status and output.

    >>> sys_command(["echo", "hi"]).stdout
    'hi\\n'
    """
    if isinstance(argv, str | bytes):
        raise ConfigError(f"sys_command takes an argv list, not a string: {argv!r} "
                          "(vmanager never runs a shell)")
    args = [str(a) for a in argv]
    if not args:
        raise ConfigError("sys_command needs a non-empty argv")
    full = in_netns(args, netns)
    log.debug("running %s%s", args, f" in namespace {netns}" if netns else "")
    # every exit status is an answer here; ``check`` decides below, with the user's argv
    proc = hostcmd.run(full, input=input, timeout=timeout, what=args[0], ok=range(-255, 256))
    if netns is not None and proc.returncode == 127 and "No such file" in proc.stderr:
        raise HostError(f"cannot run {args[0]!r}: program not found")
    result = CommandResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandError(f"{args[0]} exited with status {proc.returncode}", argv=args,
                           returncode=proc.returncode, stdout=proc.stdout,
                           stderr=proc.stderr)
    return result


@dataclass(frozen=True)
class Route:
    """One route of a routing table."""

    destination: IPNetwork
    gateway: IPAddress | None
    ifname: str | None
    table: int
    metric: int | None
    protocol: int
    scope: int

    @property
    def is_default(self) -> bool:
        """Whether this is a default route (0.0.0.0/0 or ::/0)."""
        return self.destination.prefixlen == 0


def _route(msg: Any, names: Mapping[int, str]) -> Route:
    family = msg["family"]
    dst = attr(msg, "RTA_DST")
    if dst is None:
        dst = "0.0.0.0" if family == socket.AF_INET else "::"  # noqa: S104 - a route, no bind
    gw = attr(msg, "RTA_GATEWAY")
    oif = attr(msg, "RTA_OIF")
    table = attr(msg, "RTA_TABLE") or msg["table"]
    return Route(
        destination=ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
        gateway=ipaddress.ip_address(gw) if gw else None,
        ifname=names.get(oif) if oif is not None else None,
        table=int(table),
        metric=attr(msg, "RTA_PRIORITY"),
        protocol=int(msg["proto"]),
        scope=int(msg["scope"]),
    )


def routes(*, netns: str | None = None, table: int | None = MAIN_TABLE,
           ifname: str | None = None) -> tuple[Route, ...]:
    """IPv4 and IPv6 unicast routes of ``table`` (``None``: every table).

    Raises:
        NotFoundError: ``netns`` does not exist.
        NetworkError: the kernel refused the dump.
    """
    with rtnl(netns) as ipr, kernel_call("dump routes", ifname or "*", netns):
        names = {int(m["index"]): str(attr(m, "IFLA_IFNAME")) for m in ipr.link("dump")}
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.route("dump", family=family):
                if msg["type"] != 1:  # RTN_UNICAST only: no local/broadcast entries
                    continue
                route = _route(msg, names)
                if table is not None and route.table != table:
                    continue
                if ifname is not None and route.ifname != ifname:
                    continue
                result.append(route)
    return tuple(result)


class Interface:
    """A live view of one network interface; every property re-reads the kernel.

    ``netns`` names the namespace it lives in (``None``: the caller's).
    ``Interface`` objects can be connected to a :class:`~vmanager.net.Switch`.

    Raises (from properties and methods):
        NotFoundError: the interface (or namespace) is gone.
        LinkError: the kernel refused a change.
    """

    def __init__(self, name: str, *, netns: str | None = None) -> None:
        self.name = validate.ifname(name)
        self.netns = netns

    def __repr__(self) -> str:
        where = f", netns={self.netns!r}" if self.netns else ""
        return f"Interface({self.name!r}{where})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Interface) and other.name == self.name
                and other.netns == self.netns)

    def __hash__(self) -> int:
        return hash((self.name, self.netns))

    @property
    def ifname(self) -> str:
        """The interface name (what a Switch enslaves)."""
        return self.name

    def _link(self) -> Any:
        with rtnl(self.netns) as ipr:
            index = require(ipr, self.name, self.netns)
            with kernel_call("get link", self.name, self.netns):
                return ipr.link("get", index=index)[0]

    @property
    def exists(self) -> bool:
        """Whether the interface exists right now."""
        with rtnl(self.netns) as ipr:
            return bool(ipr.link_lookup(ifname=self.name))

    @property
    def index(self) -> int:
        """The kernel's ifindex."""
        return int(self._link()["index"])

    @property
    def mac(self) -> str | None:
        """The hardware address in lower case, or ``None`` for links without one."""
        value = attr(self._link(), "IFLA_ADDRESS")
        return str(value).lower() if value else None

    @property
    def state(self) -> str:
        """The operational state in lower case: ``"up"``, ``"down"``, ``"unknown"``, ..."""
        return str(attr(self._link(), "IFLA_OPERSTATE") or "unknown").lower()

    @property
    def is_up(self) -> bool:
        """Whether the link is administratively up (IFF_UP)."""
        return bool(self._link()["flags"] & 1)

    @property
    def mtu(self) -> int:
        """The MTU in bytes."""
        return int(attr(self._link(), "IFLA_MTU"))

    @property
    def device(self) -> str | None:
        """The device behind the link (e.g. the PCI address ``0000:00:03.0``), or
        ``None`` for a virtual link (bridge, veth, tap, bond, loopback...)."""
        return _parent_device(self._link(), self.netns)

    @property
    def is_physical(self) -> bool:
        """Whether a device backs the link (what :func:`interfaces` lists)."""
        return self.device is not None

    @property
    def master(self) -> str | None:
        """The bridge or bond this interface is enslaved to, if any."""
        with rtnl(self.netns) as ipr:
            index = require(ipr, self.name, self.netns)
            master = attr(ipr.link("get", index=index)[0], "IFLA_MASTER")
            if not master:
                return None
            return str(attr(ipr.link("get", index=master)[0], "IFLA_IFNAME"))

    @property
    def addresses(self) -> tuple[IPInterface, ...]:
        """Every IPv4 and IPv6 address with its prefix, IPv4 first."""
        with rtnl(self.netns) as ipr:
            index = require(ipr, self.name, self.netns)
            with kernel_call("dump addresses", self.name, self.netns):
                msgs = ipr.addr("dump", index=index)
            found = [ipaddress.ip_interface(f"{attr(m, 'IFA_ADDRESS')}/{m['prefixlen']}")
                     for m in msgs]
        return tuple(sorted(found, key=lambda a: a.version))

    @property
    def ip(self) -> ipaddress.IPv4Address | None:
        """The first IPv4 address, or ``None``."""
        for address in self.addresses:
            if isinstance(address, ipaddress.IPv4Interface):
                return address.ip
        return None

    @property
    def routes(self) -> tuple[Route, ...]:
        """Routes of the main table that leave through this interface."""
        return routes(netns=self.netns, ifname=self.name)

    @property
    def gateway(self) -> IPAddress | None:
        """The gateway of this interface's default route (IPv4 preferred), or ``None``."""
        for route in self.routes:
            if route.is_default and route.gateway is not None:
                return route.gateway
        return None

    def _set(self, operation: str, **kwargs: Any) -> None:
        with rtnl(self.netns) as ipr:
            index = require(ipr, self.name, self.netns)
            with kernel_call(operation, self.name, self.netns):
                ipr.link("set", index=index, **kwargs)

    def up(self) -> None:
        """Bring the link administratively up."""
        self._set("set up", state="up")

    def down(self) -> None:
        """Bring the link administratively down."""
        self._set("set down", state="down")

    def add_address(self, address: str) -> None:
        """Add ``address`` (CIDR, e.g. ``"10.0.0.1/24"``) to the interface.

        Raises:
            ConfigError: the address does not parse.
            LinkError: the kernel refused (e.g. EEXIST).
        """
        try:
            iface = ipaddress.ip_interface(address)
        except ValueError as exc:
            raise ConfigError(f"address {address!r} does not parse: {exc}") from exc
        with rtnl(self.netns) as ipr:
            index = require(ipr, self.name, self.netns)
            with kernel_call(f"add address {iface}", self.name, self.netns):
                ipr.addr("add", index=index, address=str(iface.ip),
                         prefixlen=iface.network.prefixlen)


def _parent_device(msg: Any, netns: str | None) -> str | None:
    """The device behind a link (``0000:00:03.0``...), or ``None`` for a virtual link.

    The kernel reports it as ``IFLA_PARENT_DEV_NAME`` (Linux 5.15 on); before
    that, ``/sys/class/net/NAME/device`` says so for the caller's namespace.
    """
    parent = attr(msg, "IFLA_PARENT_DEV_NAME")
    if parent:
        return str(parent)
    if netns is None:
        link = f"/sys/class/net/{attr(msg, 'IFLA_IFNAME')}/device"
        if os.path.exists(link):
            return os.path.basename(os.path.realpath(link))
    return None


def _dump(netns: str | None, *, physical: bool) -> dict[str, Interface]:
    with rtnl(netns) as ipr, kernel_call("dump links", "*", netns):
        names = [str(attr(m, "IFLA_IFNAME")) for m in ipr.link("dump")
                 if not physical or _parent_device(m, netns) is not None]
    return {name: Interface(name, netns=netns) for name in sorted(names)}


def interfaces(*, netns: str | None = None) -> dict[str, Interface]:
    """The physical NICs of the namespace (the host's by default), by name.

    The seed's ``vmanager.interfaces``: links backed by a device (PCI, virtio,
    USB...: ``/sys/class/net/NAME/device`` exists), each an :class:`Interface`
    with its addresses, routes and gateway. Bridges, veths, taps, bonds and
    loopback are left out; :func:`all_links` has every link.

    Raises:
        NotFoundError: ``netns`` does not exist.
    """
    return _dump(netns, physical=True)


def all_links(*, netns: str | None = None) -> dict[str, Interface]:
    """Every link of the namespace (the host's by default), loopback included, by name.

    ``vmanager.all_links``: physical NICs and virtual links alike (bridges,
    veths, macvtaps, bonds, ...). :func:`interfaces` has the physical NICs only.

    Raises:
        NotFoundError: ``netns`` does not exist.
    """
    return _dump(netns, physical=False)


class HostInterfaces(Mapping[str, Interface]):
    """A mapping of a namespace's links that re-reads the kernel on each access.

    The physical NICs (as :func:`interfaces`), or with ``physical=False`` every
    link (as :func:`all_links`). ``HostInterfaces()["eth0"].up()`` works without
    keeping a stale list.
    """

    def __init__(self, *, netns: str | None = None, physical: bool = True) -> None:
        self._netns = netns
        self._physical = physical

    def _read(self) -> dict[str, Interface]:
        return _dump(self._netns, physical=self._physical)

    def __getitem__(self, name: str) -> Interface:
        found = self._read()
        if name not in found:
            raise KeyError(name)
        return found[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return f"HostInterfaces({sorted(self)!r})"
