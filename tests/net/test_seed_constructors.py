"""The seed's constructors create: ``Switch(...)``, ``Router(...)``, ``VirtualNic(...)``
(and ``Namespace(...)``) make their kernel objects at once; ``close()`` (idempotent) and
``with`` remove them; ``create=False`` describes without making anything.

``Bond`` needs the kernel's bonding, which this host may lack: it is proven the same way
inside a guest (``tests/netkernel``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from _nettools import ping, veth_into
from pyroute2 import IPRoute

from vmanager.errors import StateError
from vmanager.net import (
    Interface,
    Lifecycle,
    Namespace,
    Router,
    Switch,
    VirtualNic,
    list_namespaces,
)


def _kind(ifname: str) -> str | None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        return str(ipr.link("get", index=found[0])[0].get_nested("IFLA_LINKINFO",
                                                                  "IFLA_INFO_KIND"))


def _delete(*names: str) -> None:
    with IPRoute() as ipr:
        for n in names:
            for index in ipr.link_lookup(ifname=n):
                ipr.link("del", index=index)


def test_switch_is_made_by_its_constructor_and_forwards_at_once(name: Any,
                                                                netns: Any) -> None:
    a, b = netns(), netns()
    pa, pb = name("p"), name("p")
    veth_into(pa, a, address="10.203.0.1/24")
    veth_into(pb, b, address="10.203.0.2/24")
    try:
        sw = Switch(name("sw"))  # the seed: "Creates a virtual switch"
        try:
            assert sw.state is Lifecycle.CREATED and _kind(sw.name) == "bridge"
            sw.connect(pa)  # no create(), no 'with'
            sw.connect(pb)
            assert Interface(pa).master == sw.name
            assert ping(a, "10.203.0.2", count=2)
        finally:
            sw.close()
        assert _kind(sw.name) is None and Interface(pa).master is None
        sw.close()  # idempotent
        assert sw.state is Lifecycle.CLOSED
    finally:
        _delete(pa, pb)


def test_with_removes_what_the_constructor_made(name: Any) -> None:
    with Switch(name("sw")) as sw:
        assert _kind(sw.name) == "bridge"
    assert _kind(sw.name) is None


def test_create_false_describes_without_making_anything(name: Any) -> None:
    sw = Switch(name("sw"), create=False)
    nic = VirtualNic(name("vn"), create=False)
    ns = Namespace(name("ns"), create=False)
    assert (sw.state, nic.state, ns.state) == (Lifecycle.NEW,) * 3
    assert _kind(sw.name) is None and _kind(nic.port) is None
    assert ns.name not in list_namespaces()
    with pytest.raises(StateError, match="create=False"):
        sw.connect("lo")
    with sw, nic, ns:
        assert _kind(sw.name) == "bridge" and _kind(nic.port) == "veth"
        assert ns.name in list_namespaces()
    assert _kind(sw.name) is None and _kind(nic.port) is None
    assert ns.name not in list_namespaces()
    made = Switch(name("sw"))
    with made, pytest.raises(StateError, match="only once"):
        made.create()  # the constructor made it already


def test_create_takes_a_bool(name: Any) -> None:
    from vmanager.errors import ConfigError
    with pytest.raises(ConfigError, match="create="):
        Switch(name("sw"), create="no")  # type: ignore[arg-type]


def test_virtual_nic_is_made_by_its_constructor(name: Any) -> None:
    ns = Namespace(name("ns"))
    try:
        nic = VirtualNic(name("vn"), namespace=ns.name)
        assert _kind(nic.port) == "veth"
        assert Interface(nic.sink, netns=ns.name).exists
        assert Interface(nic.device, netns=ns.name).exists
        assert nic.device_node is not None and nic.device_node.exists()
        os.close(nic.open_fd())
        nic.close()
        nic.close()
        assert _kind(nic.port) is None and not nic.device_node.exists()
    finally:
        ns.close()
    assert ns.name not in list_namespaces()


def test_router_is_made_by_its_constructor(name: Any, netns: Any) -> None:
    outside = netns()
    trunk = name("tr")
    veth_into(trunk, outside, address="198.51.100.1/24")
    try:
        bridged = Router(name("r"), trunk=trunk)
        assert _kind(bridged.name) == "bridge" and _kind(bridged.lan_port) == "veth"
        assert Interface(trunk).master == bridged.name
        bridged.close()
        assert _kind(bridged.name) is None and Interface(trunk).master is None

        nat = Router(name("r"), trunk=trunk, mode="nat", subnet="10.78.1.0/24",
                     trunk_address="198.51.100.2/24")
        pid = nat.dnsmasq_pid
        assert nat.namespace in list_namespaces() and pid is not None
        assert os.path.exists(f"/proc/{pid}")
        nat.close()
        nat.close()
        assert nat.namespace not in list_namespaces() and _kind(nat.lan_port) is None
    finally:
        _delete(trunk)
