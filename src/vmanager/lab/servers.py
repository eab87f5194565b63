"""Servers in lab files: where each object runs, and the part of a lab one server makes.

::

    [servers.s1]
    ssh = "root@10.0.0.1"            # [user@]host[:port]
    identity = "keys/lab"            # optional private key (relative to the lab file)
    known_hosts = "keys/known_hosts" # optional; unknown host keys are refused
    vmanager = "vmanager"            # optional: the vmanager command on that server
    address = "10.0.0.1"             # optional: its underlay address for VXLAN
                                     #   (default: the ssh host, if it is an address)
    underlay = "eth1"                # optional: the interface VXLAN is bound to
    vxlan_port = 4789                # optional: the UDP port of its tunnels

    [switches.lan]
    vni = 1001                       # optional: the VXLAN id when the switch is stretched

    [machines.a]
    server = "s1"                    # default: the host that runs vmanager (local)

A switch used by objects on more than one server is *stretched*: each of those
servers makes its own bridge of that name and :class:`~vmanager.net.Vxlan`
ports on it whose remotes are the other servers' addresses (:func:`part`): one
port, or one per VLAN of a VLAN-aware switch (:mod:`vmanager.lab.stretch`).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vmanager import validate
from vmanager.errors import ConfigError, LabFileError
from vmanager.lab.stretch import StretchSpec, check_tunnels, tunnels
from vmanager.lab.stretch import vxlan_ifname as vxlan_ifname
from vmanager.net.vxlan import DEFAULT_PORT, check_port, check_vni

SERVER_KEYS = {"ssh", "identity", "known_hosts", "vmanager", "address", "underlay",
               "vxlan_port"}
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


@dataclass(frozen=True)
class ServerSpec:
    """A server of the lab, reached over SSH."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    vmanager: tuple[str, ...] = ("vmanager",)
    address: str | None = None
    underlay: str | None = None
    vxlan_port: int = DEFAULT_PORT

    @property
    def destination(self) -> str:
        """``user@host`` as ssh takes it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def to_json(self) -> dict[str, Any]:
        """A plain dict (kept in the orchestrator's lab record)."""
        return {"name": self.name, "host": self.host, "user": self.user, "port": self.port,
                "identity": self.identity, "known_hosts": self.known_hosts,
                "vmanager": list(self.vmanager), "address": self.address,
                "underlay": self.underlay, "vxlan_port": self.vxlan_port}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerSpec:
        """The inverse of :meth:`to_json`."""
        return cls(**{**data, "vmanager": tuple(data.get("vmanager") or ("vmanager",))})


def parse_ssh(value: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` -> (user, host, port); refuses what ssh would read as options.

    >>> parse_ssh("root@10.0.0.1:2222")
    ('root', '10.0.0.1', 2222)
    """
    user, sep, rest = value.rpartition("@")
    if not sep:
        user, rest = "", value
    host, port = rest, None
    if rest.startswith("["):  # [ipv6]:port
        end = rest.find("]")
        if end < 0:
            raise ConfigError(f"ssh {value!r}: unclosed '[' around an IPv6 address")
        host, tail = rest[1:end], rest[end + 1:]
        if tail:
            if not tail.startswith(":"):
                raise ConfigError(f"ssh {value!r}: expected ':port' after ']'")
            port = tail[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if user and not _USER.match(user):
        raise ConfigError(f"ssh {value!r}: {user!r} is not a valid user name")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.match(host):
            raise ConfigError(f"ssh {value!r}: {host!r} is not a host name or address") from None
    number = None
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"ssh {value!r}: port {port!r} is not 1 to 65535")
        number = int(port)
    return user or None, host, number


def parse_servers(c: Any, raw: object, base: Path) -> tuple[ServerSpec, ...]:
    """Validate the ``[servers]`` table (``c`` is the lab file's checker)."""
    out = []
    for sname, body_raw in c.table(raw, ("servers",)).items():
        where = ("servers", sname)
        body = c.table(body_raw, where)
        c.keys(body, where, SERVER_KEYS, {"ssh"})
        c.check(where, validate.name, sname, what="server name")
        if sname == "local":
            raise c.fail(where, "'local' means the host that runs vmanager; pick another name")
        user, host, port = c.check((*where, "ssh"), parse_ssh, c.typed(body, "ssh", str, where))

        def path(key: str, b: Any = body, w: tuple[str, ...] = where) -> str | None:
            value = c.typed(b, key, str, w)
            return str((base / value).resolve()) if value else None
        command = c.typed(body, "vmanager", str, where, "vmanager")
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise c.fail((*where, "vmanager"), f"cannot split {command!r}: {exc}") from exc
        if not argv:
            raise c.fail((*where, "vmanager"), "must name a command")
        address = c.typed(body, "address", str, where)
        if address is None:
            try:
                address = str(ipaddress.ip_address(host))
            except ValueError:
                address = None
        else:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                raise c.fail((*where, "address"), f"{address!r} is not an IP address") from None
        underlay = c.typed(body, "underlay", str, where)
        if underlay is not None:
            c.check((*where, "underlay"), validate.ifname, underlay, what="underlay")
        vport = c.check((*where, "vxlan_port"), check_port,
                        c.typed(body, "vxlan_port", int, where, DEFAULT_PORT))
        out.append(ServerSpec(sname, host, user, port, path("identity"), path("known_hosts"),
                              argv, address, underlay, vport))
    return tuple(out)


def check_server(c: Any, where: tuple[str, ...], body: Any, names: set[str]) -> str | None:
    """The ``server`` key of a machine/router/host: a name from ``[servers]`` or absent."""
    server = c.typed(body, "server", str, where)
    if server is not None and server != "local" and server not in names:
        raise c.fail((*where, "server"), f"server {server!r} is not defined in [servers]")
    return None if server in (None, "local") else server


def check_vni_key(c: Any, where: tuple[str, ...], body: Any) -> int | None:
    """The optional ``vni`` of a switch."""
    vni = c.typed(body, "vni", int, where)
    return None if vni is None else int(c.check((*where, "vni"), check_vni, vni))


# -- placement ---------------------------------------------------------------------------

def _users(lab: Any) -> dict[str, set[str | None]]:
    """For each switch, the servers (``None``: local) of the objects plugged into it."""
    users: dict[str, set[str | None]] = {s.name: set() for s in lab.switches}
    for m in lab.machines:
        for n in m.nics:
            if n.switch:
                users[n.switch].add(m.server)
    for r in lab.routers:
        if r.switch:
            users[r.switch].add(r.server)
    return users


def servers_used(lab: Any) -> list[str | None]:
    """Every place the lab puts something, ``None`` (local) first if used."""
    places: set[str | None] = {m.server for m in lab.machines}
    places |= {r.server for r in lab.routers} | {h.server for h in lab.hosts}
    for users in _users(lab).values():
        places |= users
    if not any(u for u in _users(lab).values()) and lab.switches:
        places.add(None)  # switches nobody uses stay on the local host
    return sorted(places, key=lambda s: (s is not None, s or ""))


def stretched(lab: Any) -> dict[str, list[str | None]]:
    """Switches used on more than one server, with those servers."""
    return {sw: sorted(u, key=lambda s: (s is not None, s or ""))
            for sw, u in _users(lab).items() if len(u) > 1}


def check_placement(lab: Any) -> None:
    """Refuse a lab whose stretched switches cannot be built.

    Raises:
        LabFileError: a stretched switch spans the local host (it has no
            address on the underlay) or a server without ``address``; a
            router's trunk host is on another server; two stretched switches (or
            VLANs of them) share a VNI.
    """
    servers = {s.name: s for s in lab.servers}
    wide = stretched(lab)
    for sw, where in wide.items():
        for place in where:
            if place is None:
                raise LabFileError(f"switch {sw!r} is used on the local host and on servers "
                                   f"{', '.join(str(p) for p in where if p)}: put every object "
                                   "on that switch on a server (server = \"...\")",
                                   path=str(lab.path), field=f"switches.{sw}")
            if servers[place].address is None:
                raise LabFileError(f"switch {sw!r} is stretched to server {place!r}, which needs "
                                   "address = \"...\" (its address on the underlay; the ssh "
                                   "host is not an IP address)", path=str(lab.path),
                                   field=f"servers.{place}")
    check_tunnels(lab, list(wide))
    hosts = {h.name: h.server for h in lab.hosts}
    for r in lab.routers:
        if r.trunk in hosts and hosts[r.trunk] != r.server:
            raise LabFileError(f"router {r.name!r} is on {r.server or 'local'} but its trunk "
                               f"host {r.trunk!r} is on {hosts[r.trunk] or 'local'}",
                               path=str(lab.path), field=f"routers.{r.name}.server")


def part(lab: Any, server: str | None) -> Any:
    """The lab as ``server`` (``None``: the local host) makes it.

    Only its own machines, routers and hosts; the switches they use, each
    stretched one with the :class:`StretchSpec` of this server's VXLAN ports.
    """
    check_placement(lab)
    servers = {s.name: s for s in lab.servers}
    users = _users(lab)
    wide = stretched(lab)
    switches = []
    for sw in lab.switches:
        if server not in users[sw.name] and not (server is None and not users[sw.name]
                                                 and None in servers_used(lab)):
            continue
        stretch = None
        if sw.name in wide and server is not None:
            me = servers[server]
            others = [servers[p].address for p in wide[sw.name] if p is not None and p != server]
            stretch = StretchSpec(tunnels(lab, sw), str(me.address),
                                  tuple(str(o) for o in others), me.vxlan_port, me.underlay)
        switches.append(replace(sw, stretch=stretch))
    return replace(lab,
                   machines=tuple(m for m in lab.machines if m.server == server),
                   routers=tuple(r for r in lab.routers if r.server == server),
                   hosts=tuple(h for h in lab.hosts if h.server == server),
                   switches=tuple(switches))

