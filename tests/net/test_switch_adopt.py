"""A VLAN switch made by one process and given ports by others keeps its VLANs.

``vmanager lab up`` makes a switch, then connects each machine's port through
a Switch object for the existing bridge (``net.adopt.adopt_switch``). That
object must learn the VLAN backend and the ports already there; before, it
enslaved ports in no VLAN (VLAN 10 and 20 reached each other).
"""

from __future__ import annotations

from typing import Any

import pytest
from _nettools import ping, veth_into
from pyroute2 import IPRoute

from vmanager.errors import NetworkError
from vmanager.net import Switch
from vmanager.net import adopt as _net


def _delete(*names: str) -> None:
    with IPRoute() as ipr:
        for n in names:
            for index in ipr.link_lookup(ifname=n):
                ipr.link("del", index=index)


def test_ports_connected_through_an_adopted_switch_keep_their_vlans(netns: Any,
                                                                      name: Any) -> None:
    a, b, c = netns(), netns(), netns()
    pa, pb, pc = name("p"), name("p"), name("p")
    veth_into(pa, a, address="10.203.0.1/24")
    veth_into(pb, b, address="10.203.0.2/24")
    veth_into(pc, c, address="10.203.0.3/24")
    try:
        with Switch(name("sw"), vlan_filtering=True) as made:
            made.connect(pa, vlan=10)  # by the process that made the switch
            # each later connect comes from a fresh object, as in a lab
            for port, vid in ((pb, 10), (pc, 20)):
                adopted = _net.adopt_switch(made.name, vlan_filtering=True)
                assert adopted.vlan_backend == made.vlan_backend
                adopted.connect(port, vlan=vid)
                _net.forget(adopted)
            again = _net.adopt_switch(made.name)
            if again.vlan_backend == "nftables":  # the ports are read back from nft
                assert {n: p.vlan for n, p in again.ports.items()} == {pa: 10, pb: 10, pc: 20}
            assert ping(a, "10.203.0.2", count=2), "same VLAN must pass"
            assert not ping(a, "10.203.0.3"), "VLAN 10 reached VLAN 20"
            assert not ping(c, "10.203.0.2"), "VLAN 20 reached VLAN 10"
    finally:
        _delete(pa, pb, pc)


def test_an_adopted_vlan_switch_without_its_backend_is_refused(name: Any) -> None:
    with Switch(name("sw")) as plain, \
            pytest.raises(NetworkError, match="should filter VLANs"):  # no VLANs, no nft
        _net.adopt_switch(plain.name, vlan_filtering=True)
