"""VXLAN between two namespaces playing two servers, joined by an underlay bridge.

::

    host:   underlay bridge U  (the servers' network)
              |veth                     |veth
    server A: eth0 192.0.2.1      server B: eth0 192.0.2.2
              br0 + vx (VNI n)            br0 + vx (VNI n)
              |veth                       |veth
    guest GA: 10.9.0.1/24         guest GB: 10.9.0.2/24

GA pings GB only through the tunnel: the two br0 have no other path between them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from _nettools import ping, wait_for

from vmanager.errors import ConfigError
from vmanager.net._netlink import rtnl
from vmanager.net.vxlan import Vxlan, flood_remotes, inner_mtu

A_UNDER, B_UNDER = "192.0.2.1", "192.0.2.2"
A_GUEST, B_GUEST = "10.9.0.1", "10.9.0.2"


def _veth(in_ns: str | None, name: str, peer_ns: str, peer: str, *, mtu: int = 1500,
          address: str | None = None, master: str | None = None) -> None:
    """A veth ``name`` in ``in_ns`` (None: host) whose peer ``peer`` sits in ``peer_ns``."""
    fd = os.open(f"/run/netns/{peer_ns}", os.O_RDONLY)
    try:
        with rtnl(in_ns) as ipr:
            ipr.link("add", ifname=name, kind="veth", mtu=mtu,
                     peer={"ifname": peer, "net_ns_fd": fd, "mtu": mtu})
            index = ipr.link_lookup(ifname=name)[0]
            if master:
                ipr.link("set", index=index, master=ipr.link_lookup(ifname=master)[0])
            ipr.link("set", index=index, state="up")
    finally:
        os.close(fd)
    with rtnl(peer_ns) as ipr:
        index = ipr.link_lookup(ifname=peer)[0]
        if address:
            ip, prefix = address.split("/")
            ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _bridge(netns: str | None, name: str, *, mtu: int | None = None) -> None:
    with rtnl(netns) as ipr:
        extra = {"mtu": mtu} if mtu else {}
        ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0,
                 **extra)
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


@dataclass
class Servers:
    a: str
    b: str
    ga: str
    gb: str
    underlay: str


@pytest.fixture
def servers(netns: Any, name: Any) -> Iterator[Any]:
    """A factory: two servers on an underlay of a given MTU, each with br0 and a guest."""
    made: list[str] = []

    def build(underlay_mtu: int = 1500) -> Servers:
        a, b, ga, gb = netns(), netns(), netns(), netns()
        under = name("u")
        _bridge(None, under, mtu=underlay_mtu)
        made.append(under)
        for server, addr, tag in ((a, A_UNDER, "a"), (b, B_UNDER, "b")):
            host_end = f"{under}{tag}"
            made.append(host_end)
            _veth(None, host_end, server, "eth0", mtu=underlay_mtu, address=f"{addr}/24",
                  master=under)
            _bridge(server, "br0")
        _veth(a, "ga", ga, "eth0", address=f"{A_GUEST}/24", master="br0")
        _veth(b, "gb", gb, "eth0", address=f"{B_GUEST}/24", master="br0")
        return Servers(a, b, ga, gb, under)

    yield build
    with rtnl() as ipr:
        for link in reversed(made):
            for index in ipr.link_lookup(ifname=link):
                ipr.link("del", index=index)


def _vxlan_info(netns: str, ifname: str) -> dict[str, Any]:
    with rtnl(netns) as ipr:
        msg = ipr.link("get", ifname=ifname)[0]
        data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        return {"vni": data.get_attr("IFLA_VXLAN_ID"), "port": data.get_attr("IFLA_VXLAN_PORT"),
                "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                "learning": data.get_attr("IFLA_VXLAN_LEARNING"),
                "mtu": msg.get_attr("IFLA_MTU"),
                "master": msg.get_attr("IFLA_MASTER")}


def test_guests_on_two_servers_ping_across_the_tunnel(servers: Any) -> None:
    s = servers()
    assert not ping(s.ga, B_GUEST), "the two bridges must have no path but the tunnel"
    with Vxlan("vx0", vni=4242, local=A_UNDER, remotes=[B_UNDER], port=4790,
               underlay="eth0", bridge="br0", netns=s.a) as va, \
         Vxlan("vx0", vni=4242, local=B_UNDER, remotes=[A_UNDER], port=4790,
               underlay="eth0", bridge="br0", netns=s.b):
        info = _vxlan_info(s.a, "vx0")
        assert (info["vni"], info["port"], info["local"], info["learning"]) == \
            (4242, 4790, A_UNDER, 1)
        assert info["mtu"] == va.mtu == 1450
        assert flood_remotes("vx0", s.a) == [B_UNDER]
        assert wait_for(lambda: ping(s.ga, B_GUEST), timeout=10)
        # the static flood entry is what carries ARP: without it the peer is unreachable
        va.remove_remote(B_UNDER)
        assert flood_remotes("vx0", s.a) == []
        with rtnl(s.ga) as ipr:  # forget the neighbour so ARP has to cross again
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for n in ipr.neigh("dump", ifindex=eth0):
                ipr.neigh("del", ifindex=eth0, dst=n.get_attr("NDA_DST"))
        with rtnl(s.a) as ipr:
            for entry in ipr.fdb("dump", ifindex=ipr.link_lookup(ifname="vx0")[0]):
                if entry.get_attr("NDA_DST") and \
                        entry.get_attr("NDA_LLADDR") != "00:00:00:00:00:00":
                    ipr.fdb("del", ifindex=entry["ifindex"],
                            lladdr=entry.get_attr("NDA_LLADDR"),
                            dst=entry.get_attr("NDA_DST"))
        assert not ping(s.ga, B_GUEST)
        va.add_remote(B_UNDER)
        assert wait_for(lambda: ping(s.ga, B_GUEST), timeout=10)
    with rtnl(s.a) as ipr:
        assert not ipr.link_lookup(ifname="vx0")


def test_the_inner_mtu_is_the_underlay_minus_the_overhead(servers: Any) -> None:
    s = servers(underlay_mtu=1550)  # jumbo-ish underlay: full 1500-byte frames inside
    with Vxlan("vx0", vni=7, local=A_UNDER, remotes=[B_UNDER], underlay="eth0",
               bridge="br0", netns=s.a) as va, \
         Vxlan("vx0", vni=7, local=B_UNDER, remotes=[A_UNDER], underlay="eth0",
               bridge="br0", netns=s.b):
        assert va.mtu == inner_mtu(1550) == 1500
        assert wait_for(lambda: ping(s.ga, B_GUEST), timeout=10)
        from vmanager.net import sys_command
        big = sys_command(["busybox", "ping", "-c", "1", "-W", "2", "-s", "1472", B_GUEST],
                          netns=s.ga, check=False)
        assert big.returncode == 0, big.stdout + big.stderr


def test_a_full_size_frame_does_not_fit_a_1500_underlay(servers: Any) -> None:
    s = servers()
    with Vxlan("vx0", vni=8, local=A_UNDER, remotes=[B_UNDER], underlay="eth0",
               bridge="br0", netns=s.a) as va, \
         Vxlan("vx0", vni=8, local=B_UNDER, remotes=[A_UNDER], underlay="eth0",
               bridge="br0", netns=s.b):
        assert va.mtu == 1450
        assert wait_for(lambda: ping(s.ga, B_GUEST), timeout=10)
        from vmanager.net import sys_command

        def sized(payload: int) -> int:
            return sys_command(["busybox", "ping", "-c", "1", "-W", "2", "-s", str(payload),
                                B_GUEST], netns=s.ga, check=False).returncode
        assert sized(1422) == 0   # 1450 inside: fits
        assert sized(1472) != 0   # 1500 inside: the bridge cannot put it on the tunnel


def test_a_different_vni_does_not_join(servers: Any) -> None:
    s = servers()
    with Vxlan("vx0", vni=100, local=A_UNDER, remotes=[B_UNDER], underlay="eth0",
               bridge="br0", netns=s.a), \
         Vxlan("vx0", vni=101, local=B_UNDER, remotes=[A_UNDER], underlay="eth0",
               bridge="br0", netns=s.b):
        assert not ping(s.ga, B_GUEST, count=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"vni": 0}, "VNI"), ({"vni": 1 << 24}, "VNI"), ({"vni": True}, "VNI"),
    ({"port": 0}, "port"), ({"local": "239.1.1.1"}, "unicast"),
    ({"local": "nonsense"}, "IPv4 or IPv6"), ({"remotes": ["2001:db8::1"]}, "IPv6"),
    ({"remotes": [A_UNDER]}, "local address itself"),
    ({"remotes": [B_UNDER, B_UNDER]}, "twice"), ({"mtu": 20}, "MTU"),
])
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"vni": 5, "local": A_UNDER, "remotes": [B_UNDER]}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        Vxlan("vx0", **args)


def test_a_missing_underlay_leaves_nothing(netns: Any) -> None:
    ns = netns()
    from vmanager.errors import NotFoundError
    with pytest.raises(NotFoundError, match="nosuch"):
        Vxlan("vx0", vni=5, local=A_UNDER, underlay="nosuch", netns=ns)
    with rtnl(ns) as ipr:
        assert not ipr.link_lookup(ifname="vx0")
