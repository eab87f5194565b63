"""``vmanager.interfaces``: the host's physical NICs only; ``vmanager.all_links``: every link.

Virtual links (veth, bridge, macvtap) are made for real, on the host and in a
throwaway namespace, and must show up in ``all_links`` and never in ``interfaces``.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import pytest
from _nettools import veth_into
from pyroute2 import IPRoute

import vmanager
from vmanager.net import Interface, Switch, VirtualNic, all_links, interfaces, routes


def _delete(*names: str) -> None:
    with IPRoute() as ipr:
        for n in names:
            for index in ipr.link_lookup(ifname=n):
                ipr.link("del", index=index)


def test_virtual_links_in_a_namespace_are_no_physical_nics(netns: Any) -> None:
    ns = netns()
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="va", kind="veth", peer={"ifname": "vb"})
        ipr.link("add", ifname="br0", kind="bridge")
    with VirtualNic(namespace=ns) as nic:  # a veth sink and its macvtap in there too
        links = all_links(netns=ns)
        assert {"lo", "va", "vb", "br0", nic.sink, nic.device} <= set(links)
        assert interfaces(netns=ns) == {}
        assert not any(link.is_physical for link in links.values())
        assert Interface("br0", netns=ns).device is None


def test_host_virtual_links_are_in_all_links_only(name: Any, netns: Any) -> None:
    outer = name("ve")
    veth_into(outer, netns())
    try:
        with Switch(name("sw")) as sw:
            physical = set(vmanager.interfaces)
            every = set(vmanager.all_links)
            assert {outer, sw.name, "lo"} <= every
            assert not {outer, sw.name, "lo"} & physical
            assert physical <= every
    finally:
        _delete(outer)


def test_physical_nics_are_device_backed_and_carry_ips_routes_gateway() -> None:
    found = vmanager.interfaces
    sysfs = {n for n in os.listdir("/sys/class/net")
             if os.path.exists(f"/sys/class/net/{n}/device")}
    assert set(found) == sysfs  # exactly the links a device backs
    if not found:
        pytest.skip("this host has no device-backed NIC")
    table = routes()
    for ifname, iface in found.items():
        assert isinstance(iface, vmanager.Interface) and iface.is_physical
        assert iface.device == os.path.basename(os.path.realpath(
            f"/sys/class/net/{ifname}/device"))
        assert iface.routes == tuple(r for r in table if r.ifname == ifname)
        default = next((r.gateway for r in iface.routes if r.is_default and r.gateway), None)
        assert iface.gateway == default
        if iface.ip is not None:
            assert isinstance(iface.ip, ipaddress.IPv4Address)
            assert any(a.ip == iface.ip for a in iface.addresses)
