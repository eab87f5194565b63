"""Making a lab's hosts, switches and routers, each recorded as soon as it exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmanager import paths
from vmanager.errors import ConfigError, VmanagerError
from vmanager.lab import _confine, _owner
from vmanager.lab.record import LabRecord
from vmanager.lab.spec import HostSpec, Lab, RouterSpec, SwitchSpec
from vmanager.net import adopt as _net
from vmanager.state.process import ProcessIdentity


def make_host(rec: LabRecord, host: HostSpec) -> None:
    from vmanager.net import Interface, Namespace, VirtualNic
    item = {"kind": "host", "name": host.name, "port": host.port}
    rec.put({**item, "pending": True})  # recorded before it is made (see runner._remove)
    ns = Namespace(host.name)
    _owner.mark_namespace(rec.name, host.name)
    # tap mode leaves a bridge (PORTb) in the namespace that the host's stack can use
    nic = VirtualNic(host.port, namespace=host.name, mode="tap")
    _owner.mark_link(rec.name, host.port)
    bridge = nic.tap_bridge
    assert bridge is not None
    inner = Interface(bridge, netns=host.name)
    if host.address:
        inner.add_address(host.address)
    inner.up()
    Interface("lo", netns=host.name).up()
    rec.put(item)
    _net.forget(nic)
    _net.forget(ns)


def make_switch(rec: LabRecord, sw: SwitchSpec) -> None:
    from vmanager.net import Switch
    if sw.address is not None:
        _require_unrouted(sw.name, sw.address)
    # its VXLAN ports (stretched over servers), each marked as the lab's when made
    vxlans = list(sw.stretch.ifnames) if sw.stretch else []
    item = {"kind": "switch", "name": sw.name, "vlan_filtering": sw.vlan_filtering,
            "vxlans": vxlans, "mtu": sw.mtu, "address": sw.address}
    rec.put({**item, "pending": True})
    switch = Switch(sw.name, vlan_filtering=sw.vlan_filtering, mtu=sw.mtu)
    _owner.mark_link(rec.name, sw.name)
    rec.put(item)
    if sw.address is not None:
        from vmanager.net import Interface
        Interface(sw.name).add_address(sw.address)
    _net.forget(switch)
    if sw.stretch is not None:  # one bridge per server, joined by VXLAN (lab.stretch)
        from vmanager.lab.stretch import make_stretch
        make_stretch(rec.name, sw.name, sw.stretch)


def _vxlans(item: dict[str, Any]) -> list[str]:
    # "vxlan": the one, unmarked, port of a record written before "vxlans"
    return [*(item.get("vxlans") or []), *([item["vxlan"]] if item.get("vxlan") else [])]


def switch_present(item: dict[str, Any]) -> bool:
    """Whether a recorded switch and all its VXLAN ports exist."""
    return _net.link_exists(item["name"]) and all(_net.link_exists(v) for v in _vxlans(item))


def remove_switch(item: dict[str, Any], lab: str) -> None:
    """Remove a recorded switch that is ``lab``'s: its VXLAN ports, bridge and VLAN rules."""
    for vx in item.get("vxlans") or []:
        if _owner.link_owner(vx) == lab:  # one that clashed with another's at up is not ours
            _net.remove_link(vx)
    if item.get("vxlan"):
        _net.remove_link(item["vxlan"])
    _net.remove_link(item["name"])
    if item.get("vlan_filtering"):
        _net.remove_switch_rules(item["name"])


def _require_unrouted(switch: str, address: str) -> None:
    """Refuse a host address whose network the host already routes somewhere."""
    import ipaddress

    from vmanager.net import routes
    network = ipaddress.ip_interface(address).network
    for route in routes():
        dst = route.destination
        if dst.version == 4 and dst.prefixlen > 0 and dst.overlaps(network):
            raise ConfigError(f"switch {switch!r}: the host already routes {dst} (via "
                              f"{route.ifname or route.gateway}), which overlaps {network}; "
                              "choose another subnet")


def _trunk_ifname(lab: Lab, router: RouterSpec) -> str:
    for host in lab.hosts:
        if host.name == router.trunk:
            return host.port
    return router.trunk


def make_router(rec: LabRecord, lab: Lab, spec: RouterSpec) -> None:
    from vmanager.net import Router
    kwargs: dict[str, Any] = {}
    if spec.mode == "nat":
        kwargs = {"subnet": spec.subnet, "trunk_address": spec.trunk_address,
                  "gateway": spec.gateway, "dhcp": spec.dhcp, "dns": spec.dns,
                  "dhcp_hosts": dict(spec.dhcp_hosts)}
    trunk = _trunk_ifname(lab, spec)
    if trunk == spec.trunk and not spec.force_trunk:  # an existing host interface
        _confine.check_trunk(trunk, spec.name)
    # recorded before it is made, with the names Router gives its parts
    nat = spec.mode == "nat"
    rec.put({"kind": "router", "name": spec.name, "mode": spec.mode, "pending": True,
             "lan_port": f"{spec.name}l", "namespace": spec.name if nat else None,
             "run_dir": str(paths.run_dir() / "net" / f"router-{spec.name}") if nat else None})
    router = Router(spec.name, trunk=trunk, mode=spec.mode,  # type: ignore[arg-type]
                    **kwargs)
    try:
        if router.namespace:
            _owner.mark_namespace(rec.name, router.namespace)
        _owner.mark_link(rec.name, router.lan_port)
        if spec.mode == "bridged":
            _owner.mark_link(rec.name, spec.name)
        pid = router.dnsmasq_pid
        ident = ProcessIdentity.of(pid) if pid is not None else None
        rec.put({"kind": "router", "name": spec.name, "mode": spec.mode,
                 "lan_port": router.lan_port, "namespace": router.namespace,
                 "run_dir": str(router.run_dir) if router.run_dir else None,
                 "subnet": str(router.subnet) if router.subnet else None,
                 "address": str(router.address) if router.address else None,
                 "dnsmasq": identity_json(ident) if ident else None})
        if spec.switch is not None:
            connect(rec, spec.switch, router.lan_port)
    except BaseException:
        router.close()
        raise
    _net.forget(router)
    proc = getattr(router, "_process", None)
    if proc is not None:
        proc.returncode = 0  # it runs on; keeps Popen.__del__ quiet
    keeper = getattr(router, "_log_keeper", None)
    if keeper is not None:
        keeper.abandon()  # dnsmasq's log stays bounded after this process


def connect(rec: LabRecord, switch: str, port: str, *, vlan: int | None = None,
             vlans: list[int] | None = None) -> None:
    item = rec.find("switch", switch)
    sw = _net.adopt_switch(switch, vlan_filtering=bool(item and item.get("vlan_filtering")))
    try:
        sw.connect(port, vlan=vlan, vlans=vlans)
    finally:
        _net.forget(sw)


def identity_json(ident: ProcessIdentity) -> dict[str, Any]:
    return {"pid": ident.pid, "argv": list(ident.argv), "starttime": ident.starttime}


def dnsmasq_of(run_dir: Path) -> ProcessIdentity | None:
    """The dnsmasq a router started in ``run_dir`` (its pidfile, checked against its argv)."""
    try:
        ident = ProcessIdentity.of(int((run_dir / "dnsmasq.pid").read_text().strip()))
    except (OSError, ValueError, VmanagerError):
        return None
    return ident if f"--pid-file={run_dir / 'dnsmasq.pid'}" in ident.argv else None


def identity(data: dict[str, Any]) -> ProcessIdentity:
    return ProcessIdentity(int(data["pid"]), tuple(data["argv"]), int(data["starttime"]))
