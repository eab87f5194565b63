"""Switch: real traffic between namespaces through a bridge."""

from __future__ import annotations

from typing import Any

import pytest
from _nettools import ping, veth_into
from pyroute2 import IPRoute

from vmanager.errors import ConfigError, HostError, NotFoundError, StateError
from vmanager.net import Interface, Switch


def _delete(*names: str) -> None:
    with IPRoute() as ipr:
        for n in names:
            for index in ipr.link_lookup(ifname=n):
                ipr.link("del", index=index)


def test_switch_carries_traffic_and_disconnect_stops_it(netns: Any, name: Any) -> None:
    a, b = netns(), netns()
    pa, pb = name("p"), name("p")
    veth_into(pa, a, address="10.200.0.1/24")
    veth_into(pb, b, address="10.200.0.2/24")
    try:
        with Switch(name("sw")) as sw:
            sw.connect(pa)
            sw.connect(Interface(pb))
            assert Interface(pa).master == sw.name
            assert set(sw.ports) == {pa, pb}
            assert ping(a, "10.200.0.2", count=2)
            sw.disconnect(pb)
            assert Interface(pb).master is None
            assert not ping(a, "10.200.0.2")
        assert not Interface(sw.name).exists
        assert Interface(pa).exists  # ports are not the switch's to delete
    finally:
        _delete(pa, pb)


def test_switch_refuses_bad_input_without_building(name: Any) -> None:
    with pytest.raises(ConfigError, match="15 bytes"):
        Switch("x" * 16)
    sw = Switch(name("sw"))
    with pytest.raises(StateError):
        sw.connect("lo")
    with sw:
        with pytest.raises(ConfigError, match="already exists"):
            Switch(sw.name).create()
        with pytest.raises(NotFoundError):
            sw.connect("nothere0")
        with pytest.raises(ConfigError, match="vlan_filtering"):
            sw.connect("lo", vlan=10)
        with pytest.raises(ConfigError):
            sw.disconnect("lo")


def test_connecting_a_port_twice_is_refused(name: Any, netns: Any) -> None:
    ns = netns()
    port = name("p")
    veth_into(port, ns)
    try:
        with Switch(name("sw")) as sw, Switch(name("sw")) as other:
            sw.connect(port)
            with pytest.raises(ConfigError, match="already connected"):
                sw.connect(port)
            with pytest.raises(ConfigError, match="already connected"):
                other.connect(port)
    finally:
        _delete(port)


def test_vlan_access_ports_isolate_vlans(netns: Any, name: Any) -> None:
    a, b, c = netns(), netns(), netns()
    pa, pb, pc = name("p"), name("p"), name("p")
    veth_into(pa, a, address="10.201.0.1/24")
    veth_into(pb, b, address="10.201.0.2/24")
    veth_into(pc, c, address="10.201.0.3/24")
    try:
        sw = Switch(name("sw"), vlan_filtering=True)
        try:
            sw.create()
        except HostError as exc:
            pytest.skip(str(exc))
        with sw:
            sw.connect(pa, vlan=10)
            sw.connect(pb, vlan=10)
            sw.connect(pc, vlan=20)
            assert ping(a, "10.201.0.2", count=2)
            assert not ping(a, "10.201.0.3")
            assert sw.ports[pc].vlan == 20
    finally:
        _delete(pa, pb, pc)
