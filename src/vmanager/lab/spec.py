"""Lab files: a TOML description of machines, switches, routers, hosts and links.

::

    [lab]
    name = "demo"

    [hosts.outside]            # a namespace with one veth to the host: "the internet"
    address = "198.51.100.1/24"
    port = "demo-up"           # host-side interface (a router's trunk)

    [switches.lan]
    vlan_filtering = false

    [routers.gw]
    mode = "nat"               # or "bridged"
    trunk = "outside"          # a [hosts] entry or an existing host interface
    subnet = "10.50.0.0/24"
    trunk_address = "198.51.100.2/24"
    gateway = "198.51.100.1"
    switch = "lan"             # where its LAN port plugs in

    [machines.a]
    guest = "tiny"             # or kernel/initrd/append, or disks/cd
    memory = 256
    nics = [{ switch = "lan" }]

    [[links]]                  # the same, written as a link
    endpoints = ["b:0", "lan"]

Every problem raises :class:`~vmanager.errors.LabFileError` naming the file,
the line where it can be found, and the field (``machines.a.memory``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from pathlib import Path

from vmanager import validate
from vmanager.errors import ConfigError, LabFileError
from vmanager.lab import _confine
from vmanager.lab import servers as _servers
from vmanager.lab._check import Checker
from vmanager.lab._machines import apply_links, machine
from vmanager.lab.model import (
    DiskSpec,
    HostSpec,
    Lab,
    MachineSpec,
    NicSpec,
    RouterSpec,
    SwitchSpec,
)
from vmanager.net.addresses import validate_mtu

__all__ = ["DiskSpec", "HostSpec", "Lab", "MachineSpec", "NicSpec", "RouterSpec",
           "SwitchSpec", "load", "parse"]

ROUTER_NAME_MAX = 14


def load(path: str | Path) -> Lab:
    """Read and validate a lab file.

    Raises:
        LabFileError: the file does not parse or does not validate (file, line, field).
    """
    p = Path(path)
    from vmanager.lab import clab
    if clab.is_clab(p):
        return clab.load(p)
    try:
        source = p.read_text()
    except OSError as exc:
        raise LabFileError(f"cannot read: {exc.strerror}", path=str(p)) from exc
    return parse(source, path=p)


def parse(source: str, *, path: str | Path = "<lab>") -> Lab:
    """Validate lab TOML ``source`` (``path`` only names it in errors)."""
    p = Path(path)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise LabFileError(f"not valid TOML: {exc}", path=str(p),
                           line=int(found.group(1)) if found else None) from exc
    c = Checker(p, source)
    c.keys(data, (), {"lab", "machines", "switches", "routers", "hosts", "links", "servers"},
           {"lab"})
    lab = c.table(data["lab"], ("lab",))
    c.keys(lab, ("lab",), {"name", "description", "allow_paths"}, {"name"})
    c.allowed += [c.check(("lab", "allow_paths"), _confine.resolve, Path("/"), d)
                  for d in c.typed(lab, "allow_paths", list, ("lab",), [])]
    name = c.check(("lab", "name"), lambda: validate.name(lab["name"], what="lab name"))
    servers = _servers.parse_servers(c, data.get("servers", {}), _base(p))
    server_names = {s.name for s in servers}

    switches = []
    for sname, raw in c.table(data.get("switches", {}), ("switches",)).items():
        where = ("switches", sname)
        body = c.table(raw, where)
        c.keys(body, where, {"vlan_filtering", "vni", "mtu"})
        c.check(where, validate.ifname, sname, what="switch name")
        mtu = c.typed(body, "mtu", int, where)
        if mtu is not None:
            c.check((*where, "mtu"), validate_mtu, mtu)
        switches.append(SwitchSpec(sname, bool(c.typed(body, "vlan_filtering", bool, where,
                                                       False)),
                                   _servers.check_vni_key(c, where, body), mtu=mtu))
    switch_names = {s.name for s in switches}
    by_switch = {s.name: s for s in switches}

    hosts = []
    for hname, raw in c.table(data.get("hosts", {}), ("hosts",)).items():
        where = ("hosts", hname)
        body = c.table(raw, where)
        c.keys(body, where, {"address", "port", "server"}, {"port"})
        c.check(where, validate.name, hname, what="host name")
        port = c.typed(body, "port", str, where)
        c.check((*where, "port"), _port_name, port)
        address = c.typed(body, "address", str, where)
        if address is not None:
            c.check((*where, "address"), _interface, address)
        hosts.append(HostSpec(hname, port, address,
                              _servers.check_server(c, where, body, server_names)))
    host_names = {h.name for h in hosts}

    routers = []
    for rname, raw in c.table(data.get("routers", {}), ("routers",)).items():
        where = ("routers", rname)
        body = c.table(raw, where)
        c.keys(body, where, {"mode", "trunk", "switch", "subnet", "trunk_address", "gateway",
                             "dhcp", "dns", "server", "force_trunk"}, {"trunk"})
        c.check(where, _router_name, rname)
        mode = c.typed(body, "mode", str, where, "nat")
        if mode not in ("nat", "bridged"):
            raise c.fail((*where, "mode"), f"must be 'nat' or 'bridged', not {mode!r}")
        trunk = c.typed(body, "trunk", str, where)
        if trunk not in host_names:
            c.check((*where, "trunk"), validate.ifname, trunk, what="trunk")
        switch = c.typed(body, "switch", str, where)
        if switch is not None and switch not in switch_names:
            raise c.fail((*where, "switch"), f"switch {switch!r} is not defined in "
                         "[switches]")
        subnet = c.typed(body, "subnet", str, where)
        if subnet is not None:
            c.check((*where, "subnet"), _network, subnet)
        taddr = c.typed(body, "trunk_address", str, where)
        if taddr is not None:
            c.check((*where, "trunk_address"), _interface, taddr)
        gateway = c.typed(body, "gateway", str, where)
        if gateway is not None:
            c.check((*where, "gateway"), _address, gateway)
        if mode == "nat" and taddr is None:
            raise c.fail(where, "a 'nat' router needs trunk_address (its address on the "
                         "trunk network, e.g. '198.51.100.2/24')")
        if mode == "bridged":
            for key in ("subnet", "trunk_address", "gateway", "dhcp", "dns"):
                if key in body:
                    raise c.fail((*where, key), "only applies to a 'nat' router")
        routers.append(RouterSpec(rname, mode, trunk, switch, subnet, taddr, gateway,
                                  c.typed(body, "dhcp", bool, where),
                                  c.typed(body, "dns", bool, where),
                                  _servers.check_server(c, where, body, server_names),
                                  force_trunk=bool(c.typed(body, "force_trunk", bool, where,
                                                           False))))

    machines = []
    for mname, raw in c.table(data.get("machines", {}), ("machines",)).items():
        machines.append(machine(c, mname, raw, by_switch, p, server_names))

    machines = apply_links(c, data.get("links", []), machines, routers, by_switch)
    _unique(c, switches, routers, hosts, machines)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    parsed = Lab(name=name, path=p, digest=digest, machines=tuple(machines),
                 switches=tuple(switches), routers=tuple(routers), hosts=tuple(hosts),
                 source=source, servers=servers)
    if servers:
        _servers.check_placement(parsed)
    return parsed


def _base(path: Path) -> Path:
    return path.parent if path.name != "<lab>" else Path.cwd()


def _unique(c: Checker, switches: list[SwitchSpec], routers: list[RouterSpec],
            hosts: list[HostSpec], machines: list[MachineSpec]) -> None:
    seen: dict[str, str] = {}
    for kind, names in (("switches", [s.name for s in switches]),
                        ("routers", [r.name for r in routers]),
                        ("hosts", [h.name for h in hosts]),
                        ("machines", [m.name for m in machines])):
        for n in names:
            if n in seen:
                raise c.fail((kind, n), f"name {n!r} is also used in [{seen[n]}]; names "
                             "become namespaces and links, so they must differ")
            seen[n] = kind


def _router_name(value: str) -> str:
    validate.ifname(value, what="router name")
    if len(value.encode()) > ROUTER_NAME_MAX:
        raise ConfigError(f"router name {value!r} is longer than {ROUTER_NAME_MAX} bytes")
    return value


def _port_name(value: str) -> str:
    validate.ifname(value, what="port name")
    from vmanager.net.nic import NAME_MAX
    if len(value.encode()) > NAME_MAX:  # the NIC's sink, device and bridge add a letter
        raise ConfigError(f"port name {value!r} is {len(value.encode())} bytes long; at most "
                          f"{NAME_MAX} are allowed (vmanager appends one letter for the "
                          "links it makes beside it)")
    return value


def _network(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{value!r} is not an IPv4 network such as 10.1.2.0/24") from exc


def _interface(value: str) -> ipaddress.IPv4Interface:
    if "/" not in value:
        raise ConfigError(f"{value!r} needs a prefix length, e.g. 198.51.100.2/24")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise ConfigError(f"{value!r} is not an IPv4 address with prefix") from exc


def _address(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ConfigError(f"{value!r} is not an IPv4 address") from exc
