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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmanager import validate
from vmanager.errors import ConfigError, LabFileError
from vmanager.lab import servers as _servers
from vmanager.lab.servers import ServerSpec, StretchSpec

ROUTER_NAME_MAX = 14


@dataclass(frozen=True)
class NicSpec:
    """One NIC of a machine and the switch it plugs into."""

    switch: str | None = None
    vlan: int | None = None
    vlans: tuple[int, ...] = ()
    mode: str = "macvtap"
    model: str = "virtio-net-pci"
    mac: str | None = None


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

    def definition(self) -> dict[str, Any]:
        """The machine record's definition (see :func:`vmanager.state.machine_kwargs`)."""
        return {"guest": self.guest, "kernel": self.kernel, "initrd": self.initrd,
                "append": self.append, "memory": self.memory, "cpus": self.cpus,
                "accel": self.accel, "cd": self.cd,
                "disks": [{"path": d.path, "size": d.size, "format": d.format,
                           "interface": d.interface} for d in self.disks],
                "nics": [{"switch": n.switch, "vlan": n.vlan, "vlans": list(n.vlans),
                          "mode": n.mode, "model": n.model, "mac": n.mac}
                         for n in self.nics]}


@dataclass(frozen=True)
class SwitchSpec:
    """A switch (Linux bridge)."""

    name: str
    vlan_filtering: bool = False
    vni: int | None = None
    stretch: StretchSpec | None = None  #: set in a server's part when stretched


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

    def machine(self, name: str) -> MachineSpec:
        """The machine called ``name``."""
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(name)


class _Locator:
    """Finds the line of a table or key in TOML source (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()

    def line(self, dotted: tuple[str, ...]) -> int | None:
        best: int | None = None
        table: tuple[str, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}
        for number, text in enumerate(self.lines, 1):
            header = self._HEADER.match(text)
            if header:
                table = tuple(p.strip().strip("\"'") for p in header.group(1).split("."))
                if text.lstrip().startswith("[["):
                    index = arrays.get(table, -1) + 1
                    arrays[table] = index
                    table = (*table, str(index))
                if table and dotted[:len(table)] == table:
                    best = number
                continue
            key = self._KEY.match(text)
            if key:
                path = table + tuple(p.strip("\"'") for p in key.group(1).split("."))
                if len(path) <= len(dotted) and dotted[:len(path)] == path:
                    return number
        return best


class _Checker:
    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.locator = _Locator(source)

    def fail(self, where: tuple[str, ...], message: str) -> LabFileError:
        return LabFileError(message, path=str(self.path), line=self.locator.line(where),
                            field=".".join(where) or None)

    def table(self, value: object, where: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, not {type(value).__name__}")
        return value

    def keys(self, data: Mapping[str, Any], where: tuple[str, ...], allowed: set[str],
             required: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        for key in data:
            if key not in allowed:
                raise self.fail((*where, key), f"unknown key {key!r}; allowed: "
                                f"{', '.join(sorted(allowed))}")
        for key in sorted(required):
            if key not in data:
                raise self.fail(where, f"missing required key {key!r}")

    def typed(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
              where: tuple[str, ...], default: Any = None) -> Any:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) and kind is int:
            raise self.fail((*where, key), f"must be an integer, not {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(
                k.__name__ for k in kind)
            raise self.fail((*where, key), f"must be {names}, not {type(value).__name__} "
                            f"({value!r})")
        return value

    def check(self, where: tuple[str, ...], func: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if isinstance(exc, LabFileError):
                raise
            raise self.fail(where, str(exc)) from exc


def load(path: str | Path) -> Lab:
    """Read and validate a lab file.

    Raises:
        LabFileError: the file does not parse or does not validate (file, line, field).
    """
    p = Path(path)
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
    c = _Checker(p, source)
    c.keys(data, (), {"lab", "machines", "switches", "routers", "hosts", "links", "servers"},
           {"lab"})
    lab = c.table(data["lab"], ("lab",))
    c.keys(lab, ("lab",), {"name", "description"}, {"name"})
    name = c.check(("lab", "name"), lambda: validate.name(lab["name"], what="lab name"))
    servers = _servers.parse_servers(c, data.get("servers", {}), _base(p))
    server_names = {s.name for s in servers}

    switches = []
    for sname, raw in c.table(data.get("switches", {}), ("switches",)).items():
        where = ("switches", sname)
        body = c.table(raw, where)
        c.keys(body, where, {"vlan_filtering", "vni"})
        c.check(where, validate.ifname, sname, what="switch name")
        switches.append(SwitchSpec(sname, bool(c.typed(body, "vlan_filtering", bool, where,
                                                       False)),
                                   _servers.check_vni_key(c, where, body)))
    switch_names = {s.name for s in switches}

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
                             "dhcp", "dns", "server"}, {"trunk"})
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
                                  _servers.check_server(c, where, body, server_names)))

    machines = []
    for mname, raw in c.table(data.get("machines", {}), ("machines",)).items():
        machines.append(_machine(c, mname, raw, switch_names, p, server_names))

    machines = _apply_links(c, data.get("links", []), machines, routers, switch_names)
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


def _machine(c: _Checker, mname: str, raw: object, switch_names: set[str],
             path: Path, server_names: set[str]) -> MachineSpec:
    where = ("machines", mname)
    body = c.table(raw, where)
    c.keys(body, where, {"guest", "kernel", "initrd", "append", "memory", "cpus", "accel",
                         "disks", "cd", "nics", "server"})
    c.check(where, lambda: validate.name(mname, what="machine name", max_len=15))
    guest = c.typed(body, "guest", str, where)
    if guest is not None and guest != "tiny":
        raise c.fail((*where, "guest"), f"the only built-in guest is 'tiny', not {guest!r}")
    kernel = c.typed(body, "kernel", str, where)
    if guest is not None and kernel is not None:
        raise c.fail((*where, "kernel"), "give either guest or kernel, not both")
    for key in ("initrd", "append"):
        if key in body and kernel is None:
            raise c.fail((*where, key), f"{key} needs kernel")
    memory = c.check((*where, "memory"), lambda: validate.memory_mib(
        c.typed(body, "memory", (int, str), where, 256)))
    cpus = c.typed(body, "cpus", int, where, 1)
    if not 1 <= cpus <= 255:
        raise c.fail((*where, "cpus"), f"must be 1 to 255, not {cpus}")
    accel = c.typed(body, "accel", str, where, "auto")
    if accel not in ("auto", "kvm", "tcg"):
        raise c.fail((*where, "accel"), f"must be auto, kvm or tcg, not {accel!r}")
    base = _base(path)

    def resolve(value: str) -> str:
        return str((base / value).resolve())

    disks = []
    for i, draw in enumerate(c.typed(body, "disks", list, where, [])):
        dwhere = (*where, "disks", str(i))
        if isinstance(draw, str):
            draw = {"path": draw}
        d = c.table(draw, dwhere)
        c.keys(d, dwhere, {"path", "size", "format", "interface"}, {"path"})
        size = c.typed(d, "size", (str, int), dwhere)
        if size is not None:
            c.check((*dwhere, "size"), validate.size, size, what="disk size")
        fmt = c.typed(d, "format", str, dwhere, "qcow2")
        if fmt not in ("qcow2", "raw"):
            raise c.fail((*dwhere, "format"), f"must be qcow2 or raw, not {fmt!r}")
        disks.append(DiskSpec(resolve(c.typed(d, "path", str, dwhere)),
                              str(size) if size is not None else None, fmt,
                              c.typed(d, "interface", str, dwhere, "virtio")))
    cd = c.typed(body, "cd", str, where)
    if guest is None and kernel is None and not disks and cd is None:
        raise c.fail(where, "nothing to boot: give guest = \"tiny\", kernel, disks or cd")
    nics = []
    for i, nraw in enumerate(c.typed(body, "nics", list, where, [])):
        nwhere = (*where, "nics", str(i))
        n = c.table(nraw, nwhere)
        c.keys(n, nwhere, {"switch", "vlan", "vlans", "mode", "model", "mac"})
        switch = c.typed(n, "switch", str, nwhere)
        if switch is not None and switch not in switch_names:
            raise c.fail((*nwhere, "switch"), f"switch {switch!r} is not defined in "
                         "[switches]")
        vlan = c.typed(n, "vlan", int, nwhere)
        vlans = tuple(c.typed(n, "vlans", list, nwhere, []))
        for v in ((vlan,) if vlan is not None else ()) + vlans:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4094:
                raise c.fail((*nwhere, "vlan"), f"VLAN ids are 1 to 4094, not {v!r}")
        mode = c.typed(n, "mode", str, nwhere, "macvtap")
        if mode not in ("macvtap", "tap"):
            raise c.fail((*nwhere, "mode"), f"must be macvtap or tap, not {mode!r}")
        mac = c.typed(n, "mac", str, nwhere)
        if mac is not None:
            mac = c.check((*nwhere, "mac"), validate.mac, mac)
        nics.append(NicSpec(switch, vlan, vlans, mode,
                            c.typed(n, "model", str, nwhere, "virtio-net-pci"), mac))
    return MachineSpec(mname, guest, resolve(kernel) if kernel else None,
                       resolve(body["initrd"]) if "initrd" in body else None,
                       c.typed(body, "append", str, where), memory, cpus, accel,
                       tuple(disks), resolve(cd) if cd else None, tuple(nics),
                       _servers.check_server(c, where, body, server_names))


def _apply_links(c: _Checker, links: object, machines: list[MachineSpec],
                 routers: list[RouterSpec], switch_names: set[str]) -> list[MachineSpec]:
    if not isinstance(links, list):
        raise c.fail(("links",), "must be an array of tables ([[links]])")
    by_name = {m.name: m for m in machines}
    router_idx = {r.name: i for i, r in enumerate(routers)}
    for i, raw in enumerate(links):
        where = ("links", str(i))
        body = c.table(raw, where)
        c.keys(body, where, {"endpoints", "vlan"}, {"endpoints"})
        ends = c.typed(body, "endpoints", list, where)
        if len(ends) != 2 or not all(isinstance(e, str) for e in ends):
            raise c.fail((*where, "endpoints"), "must be two names, e.g. [\"a:0\", \"lan\"]")
        sw = [e for e in ends if e in switch_names]
        other = [e for e in ends if e not in switch_names]
        if len(sw) != 1 or len(other) != 1:
            raise c.fail((*where, "endpoints"), f"{ends}: a link joins one switch to a "
                         "machine NIC ('machine:index') or a router; "
                         + ("unknown endpoint(s)" if not sw else "two switches"))
        end = other[0]
        vlan = c.typed(body, "vlan", int, where)
        if end in router_idx:
            r = routers[router_idx[end]]
            if r.switch is not None and r.switch != sw[0]:
                raise c.fail(where, f"router {end!r} is already plugged into {r.switch!r}")
            routers[router_idx[end]] = RouterSpec(**{**r.__dict__, "switch": sw[0]})
            continue
        mname, _, index = end.partition(":")
        if mname not in by_name or (index and not index.isdigit()):
            raise c.fail((*where, "endpoints"), f"{end!r} is not a machine NIC "
                         "('machine:index') or router of this lab")
        m = by_name[mname]
        nics = list(m.nics)
        k = int(index) if index else len(nics)
        while len(nics) <= k:
            nics.append(NicSpec())
        if nics[k].switch not in (None, sw[0]):
            raise c.fail(where, f"NIC {k} of {mname!r} is already plugged into "
                         f"{nics[k].switch!r}")
        nics[k] = NicSpec(**{**nics[k].__dict__, "switch": sw[0], "vlan": vlan or nics[k].vlan})
        by_name[mname] = MachineSpec(**{**m.__dict__, "nics": tuple(nics)})
    return [by_name[m.name] for m in machines]


def _unique(c: _Checker, switches: list[SwitchSpec], routers: list[RouterSpec],
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
