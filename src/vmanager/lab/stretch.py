"""Stretched switches: the VXLAN ports that join a switch's bridges on several servers.

A plain switch crosses on one VXLAN port, on the switch's VNI (``vni =`` in the
lab file, or derived from the lab and switch names: :func:`vni_of`).

A VLAN-aware switch (``vlan_filtering = true``) crosses on **one VXLAN port per
VLAN**: every VLAN used on that switch anywhere in the lab (the access VLAN of a
NIC, the tagged VLANs of a trunk NIC, VLAN 1 for an untagged NIC, a router's LAN
port or a switch address) gets its own VNI, and each server of the switch has a
VXLAN port for it that is an *access* port of that VLAN on its bridge. A frame
leaves one server untagged on its VLAN's VNI and enters the other server's
bridge in the same VLAN. No trunk port is needed, so this works with both VLAN
backends of :class:`~vmanager.net.Switch` (the kernel's bridge VLAN filtering,
and the nftables fallback, which has access ports only). Every server gets the
ports of every VLAN, not only of the VLANs of its own machines, so a machine can
migrate to any server of the switch and stay in its VLAN.

VLAN ``v`` of a switch whose VNI is ``N`` crosses on VNI ``N + v`` (wrapping
from 16777215 to 1): VLAN 10 of a switch with ``vni = 5000`` is VNI 5010. Two
tunnels of a lab that would share a VNI (a plain switch with ``vni = 5010``
beside that one, or two VLAN-aware switches with VNIs closer than their VLAN ids
reach) are refused when the lab file is read, naming both.

The ports are named ``vx`` + 8 hex digits of the lab and switch names (a plain
switch), + ``v`` + the VLAN id (a VLAN-aware one): at most 15 bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from vmanager.errors import LabFileError
from vmanager.net.switch import DEFAULT_VLAN
from vmanager.net.vxlan import VNI_MAX


@dataclass(frozen=True)
class Tunnel:
    """One VXLAN port of a stretched switch: its name, its VNI and the VLAN it carries
    (``None``: the whole switch, which is not VLAN-aware)."""

    ifname: str
    vni: int
    vlan: int | None = None


@dataclass(frozen=True)
class StretchSpec:
    """How one server joins a stretched switch: its VXLAN ports and their endpoints."""

    tunnels: tuple[Tunnel, ...]
    local: str
    remotes: tuple[str, ...]
    port: int
    underlay: str | None

    @property
    def ifnames(self) -> tuple[str, ...]:
        """The names of the VXLAN ports."""
        return tuple(t.ifname for t in self.tunnels)


def vni_of(lab_name: str, switch: str, given: int | None) -> int:
    """The switch's VNI: given, or derived from the lab and switch names (stable)."""
    if given is not None:
        return given
    return zlib.crc32(f"{lab_name}/{switch}".encode()) % (VNI_MAX - 1) + 1


def vlan_vni(switch_vni: int, vlan: int) -> int:
    """The VNI VLAN ``vlan`` of a VLAN-aware switch crosses on: the switch's VNI + the
    VLAN id, wrapping past the largest VNI to 1.

    >>> vlan_vni(5000, 10), vlan_vni(16777215, 1)
    (5010, 1)
    """
    return (switch_vni + vlan - 1) % VNI_MAX + 1


def vxlan_ifname(lab_name: str, switch: str, vlan: int | None = None) -> str:
    """The name of a stretched switch's VXLAN port (of VLAN ``vlan``): within IFNAMSIZ.

    >>> vxlan_ifname("two", "lan"), vxlan_ifname("two", "lan", 4094)
    ('vxe77e6d36', 'vxe77e6d36v4094')
    """
    base = f"vx{zlib.crc32(f'{lab_name}/{switch}'.encode()):08x}"
    return base if vlan is None else f"{base}v{vlan}"


def switch_vlans(lab: Any, switch: str) -> tuple[int, ...]:
    """Every VLAN used on ``switch`` in the whole lab (on any server), sorted."""
    vids: set[int] = set()
    for m in lab.machines:
        for n in m.nics:
            if n.switch != switch:
                continue
            vids.update(n.vlans)
            if n.vlan is not None:
                vids.add(n.vlan)
            elif not n.vlans:
                vids.add(DEFAULT_VLAN)  # an untagged port is in the default VLAN
    if any(r.switch == switch for r in lab.routers):
        vids.add(DEFAULT_VLAN)  # a router's LAN port is connected untagged
    if any(s.name == switch and s.address for s in lab.switches):
        vids.add(DEFAULT_VLAN)  # the bridge device itself is in VLAN 1
    return tuple(sorted(vids))


def tunnels(lab: Any, sw: Any) -> tuple[Tunnel, ...]:
    """The VXLAN ports switch ``sw`` (a SwitchSpec of ``lab``) has on each of its servers."""
    vni = vni_of(lab.name, sw.name, sw.vni)
    if not sw.vlan_filtering:
        return (Tunnel(vxlan_ifname(lab.name, sw.name), vni),)
    return tuple(Tunnel(vxlan_ifname(lab.name, sw.name, vid), vlan_vni(vni, vid), vid)
                 for vid in switch_vlans(lab, sw.name))


def check_tunnels(lab: Any, switches: list[str]) -> None:
    """Refuse two tunnels of stretched ``switches`` on one VNI or one port name.

    Raises:
        LabFileError: naming both switches (and VLANs) and the VNI or name.
    """
    by_vni: dict[int, tuple[str, Tunnel]] = {}
    by_name: dict[str, str] = {}
    specs = {s.name: s for s in lab.switches}
    for name in switches:
        for t in tunnels(lab, specs[name]):
            if t.vni in by_vni:
                other, ot = by_vni[t.vni]
                both = f"{_what(other, ot)} and {_what(name, t)}"
                hint = ("give one of them vni = ..." if t.vlan is None and ot.vlan is None
                        else "VLAN v of a VLAN-aware switch crosses on the switch's VNI + v; "
                        "give the switches vni = ... values at least 4095 apart")
                raise LabFileError(f"{both} would both cross on VNI {t.vni}; {hint}",
                                   path=str(lab.path), field=f"switches.{name}.vni")
            if t.ifname in by_name:  # two switches whose names hash alike
                raise LabFileError(f"switches {by_name[t.ifname]!r} and {name!r} would both "
                                   f"have VXLAN port {t.ifname!r}; rename one of them",
                                   path=str(lab.path), field=f"switches.{name}")
            by_vni[t.vni] = (name, t)
            by_name[t.ifname] = name


def _what(switch: str, t: Tunnel) -> str:
    return f"switch {switch!r}" + (f" (VLAN {t.vlan})" if t.vlan is not None else "")


def make_stretch(lab_name: str, bridge: str, stretch: StretchSpec) -> None:
    """Make a stretched switch's VXLAN ports on ``bridge``, each marked as ``lab_name``'s
    (the lab record owns them after; a VLAN's port is an access port of that VLAN)."""
    from vmanager.lab import _owner
    from vmanager.net import adopt as _net
    from vmanager.net.vxlan import Vxlan
    switch = None
    if any(t.vlan is not None for t in stretch.tunnels):
        switch = _net.adopt_switch(bridge, vlan_filtering=True)
    try:
        for t in stretch.tunnels:
            vx = Vxlan(t.ifname, vni=t.vni, local=stretch.local, remotes=stretch.remotes,
                       port=stretch.port, underlay=stretch.underlay,
                       bridge=bridge if t.vlan is None else None)
            try:
                _owner.mark_link(lab_name, t.ifname)
                if switch is not None and t.vlan is not None:
                    switch.connect(t.ifname, vlan=t.vlan)
            except BaseException:
                vx.close()
                raise
            _net.forget(vx)
    finally:
        if switch is not None:
            _net.forget(switch)
