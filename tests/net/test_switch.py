"""Switch: real traffic between namespaces through a bridge."""

from __future__ import annotations

from typing import Any

import pytest
from _nettools import ping, veth_into
from pyroute2 import IPRoute

from vmanager.errors import ConfigError, NetworkError, NotFoundError, StateError
from vmanager.net import Interface, Switch, SwitchPort, sys_command


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
    sw = Switch(name("sw"), create=False)
    with pytest.raises(StateError, match="create=False"):
        sw.connect("lo")
    with sw:
        with pytest.raises(ConfigError, match="already exists"):
            Switch(sw.name)
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


def _nft_tables() -> set[str]:
    out = sys_command(["nft", "list", "tables", "bridge"], check=False).stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("table ")}


def test_vlan_access_ports_isolate_vlans(netns: Any, name: Any) -> None:
    a, b, c, d = netns(), netns(), netns(), netns()
    pa, pb, pc, pd = name("p"), name("p"), name("p"), name("p")
    veth_into(pa, a, address="10.201.0.1/24")
    veth_into(pb, b, address="10.201.0.2/24")
    veth_into(pc, c, address="10.201.0.3/24")
    veth_into(pd, d, address="10.201.0.4/24")
    try:
        with Switch(name("sw"), vlan_filtering=True) as sw:
            assert sw.vlan_backend in ("kernel", "nftables")
            sw.connect(pa, vlan=10)
            sw.connect(pb, vlan=10)
            sw.connect(pc, vlan=20)
            sw.connect(pd)  # untagged: VLAN 1
            assert sw.ports[pc].vlan == 20
            assert ping(a, "10.201.0.2", count=2)
            assert not ping(a, "10.201.0.3")
            assert not ping(a, "10.201.0.4")
            assert not ping(d, "10.201.0.3")
            # moving a port to another VLAN changes whom it reaches
            sw.disconnect(pc)
            sw.connect(pc, vlan=10)
            assert ping(c, "10.201.0.1", count=2)
            table = sw.nft_table
            if sw.vlan_backend == "nftables":
                assert table in _nft_tables()
        assert table not in _nft_tables()
    finally:
        _delete(pa, pb, pc, pd)


def test_trunk_ports_need_kernel_vlan_filtering(netns: Any, name: Any) -> None:
    ns = netns()
    port = name("p")
    veth_into(port, ns)
    try:
        with Switch(name("sw"), vlan_filtering=True) as sw:
            if sw.vlan_backend == "kernel":
                sw.connect(port, vlans=[10, 20])
                assert sw.ports[port].is_trunk
                return
            with pytest.raises(NetworkError, match="CONFIG_BRIDGE_VLAN_FILTERING"):
                sw.connect(port, vlans=[10, 20])
            assert Interface(port).master is None and not sw.ports
    finally:
        _delete(port)


def test_nft_fallback_ruleset_keeps_vlans_apart() -> None:
    sw = Switch("sw-x.1", vlan_filtering=True, create=False)
    assert sw.nft_table.startswith("vmanager_sw_sw_x_1_")
    assert Switch("sw0", create=False).nft_table == "vmanager_sw_sw0"
    text = sw._nft_ruleset({"a": SwitchPort("a", 10), "b": SwitchPort("b", 10),
                            "c": SwitchPort("c", None)})
    assert 'iifname { "a", "b" } oifname { "a", "b" } accept' in text
    assert 'iifname { "c" } oifname { "c" } accept' in text
    assert 'iifname { "a", "b" } drop' in text  # VLAN 10 does not reach the host's VLAN 1
    assert text.count(f"flush table bridge {sw.nft_table}") == 1
