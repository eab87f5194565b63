"""Router: ties the virtual networks to a host interface (the trunk).

*bridged* mode (the seed's design)::

    trunk --[bridge NAME]-- NAMEr ====veth==== NAMEl (lan_port) -- Switch

Layer 2 passes straight through: machines see the trunk's network.

*nat* mode: the router gets a namespace of its own, named NAME::

    host                     | namespace NAME
    trunk ------------------ | macvlan "wan" (trunk_address, default route via gateway)
                             |   nftables: masquerade LAN -> wan, forward LAN -> wan only
    NAMEl (lan_port) ==veth==| "lan" (first address of subnet) + dnsmasq (DHCP, DNS)

The trunk stays usable by the host: the router reaches it through a macvlan
with its own MAC and ``trunk_address``, so nothing is taken from the host.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from vmanager import paths, validate
from vmanager.errors import ConfigError, NetworkError, NotFoundError
from vmanager.logkeeper import LogKeeper
from vmanager.net import _dnsmasq as dnsmasq
from vmanager.net._netlink import (
    attr,
    delete_link,
    kernel_call,
    lookup,
    netns_path,
    require,
    require_absent,
    rtnl,
)
from vmanager.net._nsexec import write_file
from vmanager.net._port import PortLike, port_ifname
from vmanager.net._resource import Resource, UndoStack
from vmanager.net.host import sys_command
from vmanager.net.namespace import Namespace

log = logging.getLogger(__name__)

RouterMode = Literal["bridged", "nat"]
NAME_MAX = 14  # "l"/"r" are appended for the LAN veth pair
LAN_IF = "lan"
WAN_IF = "wan"
NFT_TABLE = "vmanager"
STOP_TIMEOUT = 5.0


def default_subnet(name: str) -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 derived from the router name (stable across runs)."""
    h = zlib.crc32(name.encode())
    return ipaddress.IPv4Network(f"10.{(h >> 8) & 0xFF}.{h & 0xFF}.0/24")


def _parse_subnet(value: object) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise ConfigError(f"subnet {value!r} does not parse as an IPv4 network such as "
                          f"'10.1.2.0/24': {exc}") from exc
    if net.prefixlen > 29:
        raise ConfigError(f"subnet {value!r} is too small for a router and DHCP clients")
    return net


class Router(Resource):
    """The seed's router: a trunk interface and one LAN port that plugs into a Switch.

    Args:
        name: router name (at most 14 bytes); the bridge (bridged) or namespace (nat).
        trunk: existing host interface (name or :class:`Interface`) leading outside.
        mode: ``"bridged"`` (layer 2 through) or ``"nat"`` (routed and masqueraded).
        subnet: LAN subnet in NAT mode (default: a /24 in 10/8 derived from the name);
            the router takes its first address.
        trunk_address: the router's address on the trunk network in NAT mode (CIDR,
            required there).
        gateway: the next hop for its default route in NAT mode (on the trunk network).
        dhcp: serve DHCP on the LAN with dnsmasq (NAT mode; default on).
        dns: serve DNS on the LAN with dnsmasq (NAT mode; default on).
        upstream_dns: servers dnsmasq forwards to (default: none, it answers only
            the LAN's own names: ``router.<domain>`` and DHCP clients).
        domain: the LAN's DNS domain (default ``lan``).
        create: make it now (default); ``False`` only describes it, for
            :meth:`create` or ``with`` to make later.

    Constructing it creates the router (bridge or namespace, veths, dnsmasq);
    :meth:`close` (idempotent) or leaving ``with`` removes all of it.

    >>> r = Router("r1", trunk="eth1", mode="nat", trunk_address="192.0.2.9/24",
    ...            gateway="192.0.2.1")                             # doctest: +SKIP
    >>> Switch("sw").connect(r)                                     # doctest: +SKIP

    Raises:
        ConfigError: bad name, mode, subnet or addresses; a name in use.
        NotFoundError: the trunk does not exist.
        HostError: nft or dnsmasq missing or failing to start.
        LinkError: the kernel refused.
    """

    _kind = "router"

    def __init__(self, name: str, *, trunk: PortLike, mode: RouterMode = "bridged",
                 subnet: str | None = None, trunk_address: str | None = None,
                 gateway: str | None = None, dhcp: bool | None = None,
                 dns: bool | None = None, upstream_dns: Sequence[str] = (),
                 domain: str = "lan", dhcp_hosts: Mapping[str, str] | None = None,
                 create: bool = True) -> None:
        super().__init__()
        #: DHCP reservations, MAC -> IPv4 address on the LAN (nat mode)
        self.dhcp_hosts: dict[str, ipaddress.IPv4Address] = {}
        self.name = validate.ifname(name, what="router name")
        if len(self.name.encode()) > NAME_MAX:
            raise ConfigError(f"router name {name!r} is too long: at most {NAME_MAX} bytes")
        self.trunk = port_ifname(trunk)
        if mode not in ("bridged", "nat"):
            raise ConfigError(f"router mode must be 'bridged' or 'nat', got {mode!r}")
        self.mode: RouterMode = mode
        self._process: subprocess.Popen[bytes] | None = None
        self._log_keeper: LogKeeper | None = None
        self.run_dir: Path | None = None
        if mode == "bridged":
            for option, value in (("subnet", subnet), ("trunk_address", trunk_address),
                                  ("gateway", gateway), ("dhcp", dhcp), ("dns", dns)):
                if value:
                    raise ConfigError(f"{option}= only applies to a router in 'nat' mode")
            self.subnet: ipaddress.IPv4Network | None = None
            self.trunk_address: ipaddress.IPv4Interface | None = None
            self.gateway: ipaddress.IPv4Address | None = None
            self.dhcp = self.dns = False
            self.upstream_dns: tuple[ipaddress.IPv4Address, ...] = ()
            self.domain = domain
        else:
            self._init_nat(subnet, trunk_address, gateway, dhcp, dns, upstream_dns, domain)
            self._init_reservations(dhcp_hosts or {})
        if dhcp_hosts and mode == "bridged":
            raise ConfigError("dhcp_hosts= only applies to a router in 'nat' mode")
        self._init_done(create)

    def _init_reservations(self, hosts: Mapping[str, str]) -> None:
        assert self.subnet is not None
        for mac, address in hosts.items():
            try:
                ip = ipaddress.IPv4Address(address)
            except ValueError as exc:
                raise ConfigError(f"router {self.name!r}: DHCP reservation {address!r} for "
                                  f"{mac} is not an IPv4 address") from exc
            if ip not in self.subnet or ip in (self.subnet.network_address,
                                               self.subnet.broadcast_address):
                raise ConfigError(f"router {self.name!r}: DHCP reservation {ip} for {mac} is "
                                  f"not a host address of the LAN {self.subnet}")
            if self.address is not None and ip == self.address.ip:
                raise ConfigError(f"router {self.name!r}: DHCP reservation {ip} for {mac} is "
                                  "the router's own address")
            self.dhcp_hosts[validate.mac(mac)] = ip

    def _init_nat(self, subnet: str | None, trunk_address: str | None, gateway: str | None,
                  dhcp: bool | None, dns: bool | None, upstream_dns: Sequence[str],
                  domain: str) -> None:
        name = self.name
        self.subnet = _parse_subnet(subnet) if subnet is not None else default_subnet(name)
        if trunk_address is None:
            raise ConfigError(f"router {name!r} in 'nat' mode needs trunk_address= "
                              "(its own address on the trunk network, e.g. '192.0.2.9/24')")
        try:
            self.trunk_address = ipaddress.IPv4Interface(trunk_address)
            self.gateway = ipaddress.IPv4Address(gateway) if gateway is not None else None
            self.upstream_dns = tuple(ipaddress.IPv4Address(s) for s in upstream_dns)
        except ValueError as exc:
            raise ConfigError(f"router {name!r}: {exc}") from exc
        if self.trunk_address.network.overlaps(self.subnet):
            raise ConfigError(f"router {name!r}: LAN subnet {self.subnet} overlaps the trunk "
                              f"network {self.trunk_address.network}")
        if self.gateway is not None and self.gateway not in self.trunk_address.network:
            raise ConfigError(f"gateway {self.gateway} is not on the trunk network "
                              f"{self.trunk_address.network}")
        self.dhcp = True if dhcp is None else bool(dhcp)
        self.dns = True if dns is None else bool(dns)
        self.domain = validate.name(domain, what="DNS domain")

    def __repr__(self) -> str:
        return f"Router({self.name!r}, trunk={self.trunk!r}, mode={self.mode!r})"

    def _label(self) -> str:
        return f"router {self.name!r}"

    @property
    def lan_port(self) -> str:
        """The host-side LAN port: connect it to a Switch."""
        return self.name + "l"

    @property
    def ifname(self) -> str:
        """Same as :attr:`lan_port` (what a Switch enslaves)."""
        return self.lan_port

    @property
    def namespace(self) -> str | None:
        """The router's namespace in NAT mode, ``None`` when bridged."""
        return self.name if self.mode == "nat" else None

    @property
    def address(self) -> ipaddress.IPv4Interface | None:
        """The router's LAN address in NAT mode (the DHCP clients' gateway)."""
        if self.subnet is None:
            return None
        return ipaddress.IPv4Interface(f"{self.subnet.network_address + 1}/"
                                      f"{self.subnet.prefixlen}")

    @property
    def dnsmasq_pid(self) -> int | None:
        """The pid of the router's dnsmasq, while it runs."""
        proc = self._process
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- building ------------------------------------------------------------

    def _build(self, undo: UndoStack) -> None:
        with rtnl() as host:
            trunk = lookup(host, self.trunk)
            if trunk is None:
                raise NotFoundError(f"trunk interface {self.trunk!r} of router {self.name!r} "
                                    "does not exist")
            for name in (self.lan_port, self.name + "r") + ((self.name,) if self.mode ==
                                                             "bridged" else ()):
                require_absent(host, name, None)
            was_up = bool(host.link("get", index=trunk)[0]["flags"] & 1)
            if self.mode == "bridged":
                self._build_bridged(host, trunk, undo)
            else:
                self._build_nat(host, trunk, undo)
            if not was_up:
                undo.push(f"set {self.trunk} down", lambda: self._trunk_state("down"))
            with kernel_call("set up", self.trunk, None):
                host.link("set", index=trunk, state="up")
        log.info("created %r", self)

    def _trunk_state(self, state: str) -> None:
        with rtnl() as ipr:
            index = lookup(ipr, self.trunk)
            if index is not None:
                with kernel_call(f"set {state}", self.trunk, None):
                    ipr.link("set", index=index, state=state)

    def _build_bridged(self, host: Any, trunk: int, undo: UndoStack) -> None:
        ipr = host
        inner = self.name + "r"
        if attr(ipr.link("get", index=trunk)[0], "IFLA_MASTER"):
            raise ConfigError(f"trunk {self.trunk!r} is already enslaved elsewhere")
        with kernel_call("add bridge", self.name, None):
            ipr.link("add", ifname=self.name, kind="bridge", br_stp_state=0,
                     br_forward_delay=0)
        undo.push(f"delete bridge {self.name}", lambda: delete_link(self.name, None))
        with kernel_call("add veth", self.lan_port, None):
            ipr.link("add", ifname=self.lan_port, kind="veth", peer=inner)
        undo.push(f"delete veth {self.lan_port}", lambda: delete_link(self.lan_port, None))
        bridge = require(ipr, self.name, None)
        with kernel_call(f"connect to bridge {self.name}", self.trunk, None):
            ipr.link("set", index=trunk, master=bridge)
        undo.push(f"release trunk {self.trunk}", self._release_trunk)
        for name in (inner, self.lan_port):
            index = require(ipr, name, None)
            with kernel_call("set up", name, None):
                if name == inner:
                    ipr.link("set", index=index, master=bridge)
                ipr.link("set", index=index, state="up")
        with kernel_call("set up", self.name, None):
            ipr.link("set", index=bridge, state="up")

    def _release_trunk(self) -> None:
        with rtnl() as ipr:
            index, bridge = lookup(ipr, self.trunk), lookup(ipr, self.name)
            if index is None or bridge is None:
                return
            if attr(ipr.link("get", index=index)[0], "IFLA_MASTER") == bridge:
                with kernel_call(f"release from bridge {self.name}", self.trunk, None):
                    ipr.link("set", index=index, master=0)

    def _build_nat(self, host: Any, trunk: int, undo: UndoStack) -> None:
        assert self.subnet is not None and self.trunk_address is not None
        ns = Namespace(self.name)
        undo.push(f"remove namespace {self.name}", ns.close)
        nsfd = os.open(netns_path(self.name), os.O_RDONLY)
        try:
            with kernel_call("add veth", self.lan_port, None):
                host.link("add", ifname=self.lan_port, kind="veth",
                          peer={"ifname": LAN_IF, "net_ns_fd": nsfd})
            undo.push(f"delete veth {self.lan_port}",
                      lambda: delete_link(self.lan_port, None))
            with kernel_call("add macvlan on trunk", self.trunk, None):
                host.link("add", ifname=WAN_IF, kind="macvlan", link=trunk,
                          macvlan_mode="bridge", net_ns_fd=nsfd)
        finally:
            os.close(nsfd)
        with kernel_call("set up", self.lan_port, None):
            host.link("set", index=require(host, self.lan_port, None), state="up")
        with rtnl(self.name) as ipr:
            for ifname, address in ((LAN_IF, self.address), (WAN_IF, self.trunk_address)):
                assert address is not None
                index = require(ipr, ifname, self.name)
                with kernel_call(f"configure {address} on", ifname, self.name):
                    ipr.addr("add", index=index, address=str(address.ip),
                             prefixlen=address.network.prefixlen)
                    ipr.link("set", index=index, state="up")
            ipr.link("set", index=require(ipr, "lo", self.name), state="up")
            if self.gateway is not None:
                with kernel_call(f"add default route via {self.gateway}", WAN_IF, self.name):
                    ipr.route("add", dst="0.0.0.0/0", gateway=str(self.gateway))
        write_file(self.name, "/proc/sys/net/ipv4/ip_forward", "1")
        self._load_nft()
        undo.push(f"delete nft table {NFT_TABLE}", self._unload_nft)
        if self.dhcp or self.dns:
            self._start_dnsmasq(undo)

    def _nft_ruleset(self) -> str:
        return f"""table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{WAN_IF}" ip saddr {self.subnet} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        iifname "{LAN_IF}" oifname "{WAN_IF}" ip saddr {self.subnet} accept
        iifname "{WAN_IF}" oifname "{LAN_IF}" ct state established,related accept
    }}
}}
"""

    def _load_nft(self) -> None:
        sys_command(["nft", "-f", "-"], input=self._nft_ruleset(), netns=self.name,
                    timeout=30)

    def _unload_nft(self) -> None:
        if not os.path.exists(netns_path(self.name)):
            return
        sys_command(["nft", "delete", "table", "ip", NFT_TABLE], netns=self.name,
                    timeout=30, check=False)

    def _dnsmasq_argv(self, rundir: Path) -> list[str]:
        assert self.subnet is not None and self.address is not None
        return dnsmasq.argv(rundir=rundir, lan_if=LAN_IF, subnet=self.subnet,
                            address=self.address, domain=self.domain, dns=self.dns,
                            upstream_dns=self.upstream_dns, dhcp=self.dhcp,
                            dhcp_hosts=self.dhcp_hosts)

    def _start_dnsmasq(self, undo: UndoStack, timeout: float = 10.0) -> None:
        rundir = paths.private_dir(paths.run_dir() / "net" / f"router-{self.name}")
        self.run_dir = rundir
        undo.push(f"remove {rundir}", lambda: dnsmasq.remove_tree(rundir))
        self._process, self._log_keeper = dnsmasq.spawn(
            self._dnsmasq_argv(rundir), rundir=rundir, netns=self.name, router=self.name)
        undo.push("stop dnsmasq", self._stop_dnsmasq)
        dnsmasq.wait_started(self._process, rundir=rundir, router=self.name, timeout=timeout,
                             keeper=self._log_keeper)

    def _stop_dnsmasq(self) -> None:
        proc, self._process = self._process, None
        keeper, self._log_keeper = self._log_keeper, None
        if proc is not None:
            dnsmasq.stop(proc, router=self.name, timeout=STOP_TIMEOUT, keeper=keeper)

    def leases(self) -> list[tuple[str, str]]:
        """Current DHCP leases as ``(mac, ip)`` pairs (NAT mode with DHCP).

        Raises:
            StateError: the router is not running.
            NetworkError: the lease file cannot be read.
        """
        self._require_created("read the leases of")
        if self.run_dir is None:
            return []
        try:
            lines = (self.run_dir / "leases").read_text().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise NetworkError(f"cannot read leases of router {self.name!r}: {exc}") from exc
        return [(f[1], f[2]) for f in (line.split() for line in lines) if len(f) >= 3]
