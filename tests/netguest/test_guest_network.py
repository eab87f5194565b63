"""Real guests on real virtual networks: switch, NAT and bridged routers, hotplug.

The module shares one booted pair (see ``conftest.lab``); every test leaves the
pair as it found it: eth0 of each on the switch, addressed, link up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _guestnet import (
    Lab,
    delete_link,
    eventually,
    guest_ifname,
    guest_ping,
    name,
    veth_into,
)
from pyroute2 import IPRoute

from vmanager import Machine
from vmanager.errors import ConfigError, NotFoundError, StateError
from vmanager.net import Lifecycle, Router, Switch, VirtualNic, stable_mac

pytestmark = [pytest.mark.net, pytest.mark.guest]

#: Debian's busybox looks for /etc/udhcpc/default.script; the tiny guest ships
#: its lease script here (see the report: the guest should install it there too).
UDHCPC_SCRIPT = "/usr/share/udhcpc/default.script"


def test_two_machines_on_one_switch_ping_each_other(lab: Lab) -> None:
    assert lab.a.namespace != lab.b.namespace
    assert {lab.a.nics[0].port, lab.b.nics[0].port} <= set(lab.sw.ports)
    assert lab.a.nics[0].mac == stable_mac(lab.a.name, 0)
    assert guest_ping(lab.a, lab.b_ip, count=2)
    assert guest_ping(lab.b, lab.a_ip)


def test_nic_state_cuts_and_restores_the_link_in_qemu(lab: Lab) -> None:
    port_flags_before = _host_flags(lab.a.nics[0].port)
    try:
        lab.a.nic_state(lab.a.nics[0], False)
        assert lab.a.wait_until_succeeds("cat /sys/class/net/eth0/carrier || true",
                                         timeout=10).strip() in ("0", "")
        assert not guest_ping(lab.a, lab.b_ip)
        # QEMU only: the host side of the NIC never changed
        assert _host_flags(lab.a.nics[0].port) == port_flags_before
    finally:
        lab.a.nic_state("nic0", True)
    lab.a.wait_until_succeeds("[ $(cat /sys/class/net/eth0/carrier) = 1 ]", timeout=10)
    assert eventually(lambda: guest_ping(lab.a, lab.b_ip))


def test_add_nic_appears_in_the_guest_carries_traffic_and_del_nic_removes_it(
        lab: Lab) -> None:
    a = lab.a
    nic = a.add_nic()
    try:
        assert a.nics == [a.nics[0], nic] and nic.mac == stable_mac(a.name, 1)
        assert nic.namespace == a.namespace and a.nic_id(nic) == "nic1"
        ifname = guest_ifname(a, nic.mac)
        # a second subnet on the same switch: B answers on it only through A's new NIC
        lab.sw.connect(nic)
        lab.b.succeed("ip addr add 10.204.0.2/24 dev eth0")
        try:
            a.succeed(f"ip addr add 10.204.0.1/24 dev {ifname} && ip link set {ifname} up")
            assert eventually(lambda: guest_ping(a, "10.204.0.2"))
            a.nic_state(nic, False)
            assert not guest_ping(a, "10.204.0.2")
            a.nic_state(1, True)
        finally:
            lab.b.succeed("ip addr del 10.204.0.2/24 dev eth0")
            lab.sw.disconnect(nic)
        a.del_nic(nic)
    except BaseException:
        if nic in a.nics:
            a.del_nic(nic)
        raise
    assert nic.state is Lifecycle.CLOSED and a.nics == [a.nics[0]]
    assert a.succeed(f"ls /sys/class/net/{ifname} 2>/dev/null || echo gone").strip() == "gone"
    with pytest.raises(StateError, match="already removed"):
        a.del_nic(nic)
    with pytest.raises(NotFoundError):
        a.del_nic("nic7")
    with pytest.raises(NotFoundError):
        a.nic_state(5, True)
    # the guest still has its first NIC and it still works
    assert guest_ping(a, lab.b_ip)


def test_hot_plugging_a_given_nic_leaves_it_to_the_caller(lab: Lab) -> None:
    with VirtualNic(name("n"), namespace=lab.b.namespace) as nic:
        assert lab.b.add_nic(nic) is nic
        try:
            guest_ifname(lab.b, nic.mac)
            with pytest.raises(ConfigError, match="already"):
                lab.b.add_nic(nic)
        finally:
            lab.b.del_nic(nic.name)
        assert nic.state is Lifecycle.CREATED  # given, so not the machine's to close
        lab.b.wait_until_succeeds(
            f"! grep -qx {nic.mac} /sys/class/net/*/address", timeout=10)


def test_nic_calls_on_a_machine_that_is_not_running(tiny: object) -> None:
    m = Machine(name("x"), nics=1)
    for call in (lambda: m.add_nic(), lambda: m.del_nic(0), lambda: m.nic_state(0, False)):
        with pytest.raises(StateError, match="running"):
            call()


@pytest.fixture
def trunk(outside: str) -> Iterator[str]:
    """A host link whose far end is ``eth0`` (10.250.0.1/24) in the outside namespace."""
    host_end = name("t")
    veth_into(host_end, outside, "10.250.0.1/24")
    yield host_end
    delete_link(host_end)


def test_nat_router_leases_an_address_and_reaches_the_outside(
        lab: Lab, outside: str, trunk: str) -> None:
    a = lab.a
    with Router(name("r"), trunk=trunk, mode="nat", trunk_address="10.250.0.2/24",
                gateway="10.250.0.1") as router, Switch(name("s")) as lan:
        assert router.subnet is not None and router.address is not None
        lan.connect(router)
        nic = a.add_nic()
        try:
            lan.connect(nic)
            ifname = guest_ifname(a, nic.mac)
            a.succeed(f"ip link set {ifname} up && udhcpc -i {ifname} -n -q -t 10 -T 1 "
                      f"-s {UDHCPC_SCRIPT}", timeout=60)
            leased = a.succeed(f"ip -4 -o addr show dev {ifname}")
            ip = next(w for w in leased.split() if w.count(".") == 3 and "/" in w)
            assert ip.split("/")[0] in {str(h) for h in router.subnet.hosts()}
            assert (nic.mac, ip.split("/")[0]) in router.leases()
            assert f"default via {router.address.ip}" in a.succeed("ip route")
            assert eventually(lambda: guest_ping(a, "10.250.0.1"))
            # the outside saw the router's trunk address, not the guest's (masquerade)
            with IPRoute(netns=outside, flags=0) as ipr:
                seen = {n.get_attr("NDA_DST") for n in ipr.get_neighbours()}
            assert "10.250.0.2" in seen and ip.split("/")[0] not in seen
        finally:
            a.del_nic(nic)


def test_bridged_router_carries_layer2_to_the_trunk(
        lab: Lab, outside: str, trunk: str) -> None:
    a = lab.a
    with Router(name("r"), trunk=trunk, mode="bridged") as router, \
            Switch(name("s")) as lan:
        lan.connect(router)
        nic = a.add_nic()
        try:
            lan.connect(nic)
            ifname = guest_ifname(a, nic.mac)
            a.succeed(f"ip addr add 10.250.0.7/24 dev {ifname} && ip link set {ifname} up")
            assert eventually(lambda: guest_ping(a, "10.250.0.1"))
            # layer 2: the outside learnt the guest's own MAC for its address
            with IPRoute(netns=outside, flags=0) as ipr:
                macs = {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                        for n in ipr.get_neighbours()}
            assert macs.get("10.250.0.7") == nic.mac
        finally:
            a.del_nic(nic)


def _host_flags(ifname: str) -> int:
    with IPRoute() as ipr:
        return int(ipr.link("get", index=ipr.link_lookup(ifname=ifname)[0])[0]["flags"])
