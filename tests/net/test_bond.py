"""Bond: active-backup keeps traffic flowing when the active member goes down."""

from __future__ import annotations

from typing import Any

import pytest
from _nettools import ping, veth_into, wait_for
from pyroute2 import IPRoute

from vmanager.errors import ConfigError, HostError, NotFoundError
from vmanager.net import Bond, Interface, Switch


def _delete(*names: str) -> None:
    with IPRoute() as ipr:
        for n in names:
            for index in ipr.link_lookup(ifname=n):
                ipr.link("del", index=index)


def _bridge_in(ns: str, members: list[str], address: str) -> None:
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="br0", kind="bridge", br_stp_state=0, br_forward_delay=0)
        br = ipr.link_lookup(ifname="br0")[0]
        for member in members:
            ipr.link("set", index=ipr.link_lookup(ifname=member)[0], master=br)
        ip, prefix = address.split("/")
        ipr.addr("add", index=br, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=br, state="up")


def test_active_backup_survives_losing_the_active_member(netns: Any, name: Any) -> None:
    left, right = netns(), netns()
    m1, m2, rp = name("m"), name("m"), name("p")
    # two parallel links from the host bond into "left", bridged there
    veth_into(m1, left, inner="a1")
    veth_into(m2, left, inner="a2")
    _bridge_in(left, ["a1", "a2"], "10.202.0.1/24")
    veth_into(rp, right, address="10.202.0.2/24")
    try:
        try:
            bond = Bond(name("b"), [m1, m2], mode="active-backup", miimon=50, primary=m1)
        except HostError as exc:
            assert Interface(m1).master is None and Interface(m2).master is None
            pytest.skip(str(exc))
        with bond, Switch(name("sw")) as sw:
            sw.connect(bond)
            sw.connect(rp)
            assert ping(right, "10.202.0.1", count=2)
            active = bond.active
            assert active in (m1, m2)
            with IPRoute(netns=left, flags=0) as ipr:  # pull the far end's cable
                ipr.link("set", index=ipr.link_lookup(ifname="a1" if active == m1
                                                      else "a2")[0], state="down")
            assert wait_for(lambda: bond.active not in (None, active))
            assert ping(right, "10.202.0.1", count=3)
        assert Interface(m1).master is None
    finally:
        _delete(m1, m2, rp)


def test_bond_refuses_bad_input(name: Any) -> None:
    with pytest.raises(ConfigError):
        Bond(name("b"), [])
    with pytest.raises(ConfigError):
        Bond(name("b"), ["x", "x"])
    with pytest.raises(ConfigError, match="mode"):
        Bond(name("b"), ["x"], mode="fastest")
    with pytest.raises(ConfigError, match="primary"):
        Bond(name("b"), ["x"], primary="y")
    with pytest.raises(NotFoundError):
        Bond(name("b"), ["nothere0"])


def test_bond_request_carries_mode_and_miimon_to_the_kernel() -> None:
    """What can be checked without CONFIG_BONDING: the netlink request pyroute2 builds."""
    from pyroute2.iproute.linux import get_arguments_processor

    bond = Bond("bond9", ["x", "y"], mode="802.3ad", miimon=50, create=False)
    request = dict(get_arguments_processor("link", "add", bond._link_add_args()).items())
    info = request["IFLA_LINKINFO"]["attrs"]
    assert ["IFLA_INFO_KIND", "bond"] in [list(a) for a in info]
    data = dict(next(a[1]["attrs"] for a in info if a[0] == "IFLA_INFO_DATA"))
    assert data == {"IFLA_BOND_MODE": 4, "IFLA_BOND_MIIMON": 50}
    assert request["ifname"] == "bond9"
