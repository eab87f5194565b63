"""Router: NAT with DHCP/DNS, and bridged layer 2, to an "outside" namespace we make.

The outside world is a namespace holding the far end of the trunk veth, with
addresses from TEST-NET-2 (198.51.100.0/24); nothing leaves the test's namespaces.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _nettools import ns_socket, ping, veth_into
from pyroute2 import IPRoute

from vmanager.errors import ConfigError, NotFoundError
from vmanager.net import Interface, Router, Switch, list_namespaces, sys_command

OUTSIDE = "198.51.100.1"
UDHCPC_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then echo "LEASE ip=$ip mask=$mask router=$router dns=$dns"; fi
"""


def _delete(*names: str) -> None:
    with IPRoute() as ipr:
        for n in names:
            for index in ipr.link_lookup(ifname=n):
                ipr.link("del", index=index)


def _dhcp(ns: str, script: Path) -> dict[str, str]:
    """Run busybox udhcpc in ``ns``; return the lease fields its script printed."""
    result = sys_command(["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5",
                          "-T", "1", "-s", str(script)], netns=ns, timeout=30)
    line = next(x for x in result.stdout.splitlines() if x.startswith("LEASE"))
    return dict(field.split("=", 1) for field in line.split()[1:])


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(u) for u in line.split()[1:]}
    raise AssertionError(f"no Uid line for {pid}")


def test_nat_router_leases_resolves_and_masquerades(netns: Any, name: Any,
                                                   tmp_path: Path) -> None:
    outside, lan_host = netns(), netns()
    trunk, host_port = name("tr"), name("p")
    veth_into(trunk, outside, address=f"{OUTSIDE}/24")
    veth_into(host_port, lan_host)
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    try:
        router = Router(name("r"), trunk=trunk, mode="nat", subnet="10.77.1.0/24",
                        trunk_address="198.51.100.2/24", gateway=OUTSIDE)
        with router, Switch(name("sw")) as sw:
            sw.connect(router)
            sw.connect(host_port)
            assert router.namespace in list_namespaces()
            pid = router.dnsmasq_pid
            assert pid is not None
            assert _uids(pid) != {0}, "dnsmasq kept root"
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == \
                os.stat(f"/run/netns/{router.namespace}").st_ino, "dnsmasq outside the router"
            # its log is a pipe to a log keeper (bounded, also after this process)
            assert router.run_dir is not None
            keeper = int((router.run_dir / "dnsmasq.log.keeper").read_text())
            pipe = os.readlink(f"/proc/{keeper}/fd/0")
            fds = Path(f"/proc/{pid}/fd")
            assert pipe.startswith("pipe:") and pipe in {os.readlink(f) for f in fds.iterdir()}
            assert _eventually(lambda: b"started, version" in
                               (router.run_dir / "dnsmasq.log").read_bytes())

            lease = _dhcp(lan_host, script)
            assert ipaddress.IPv4Address(lease["ip"]) in ipaddress.IPv4Network("10.77.1.0/24")
            assert lease["router"] == "10.77.1.1" and lease["dns"] == "10.77.1.1"
            Interface("eth0", netns=lan_host).add_address(f"{lease['ip']}/24")
            with IPRoute(netns=lan_host, flags=0) as ipr:
                ipr.route("add", dst="0.0.0.0/0", gateway=lease["router"])
            assert any(ip == lease["ip"] for _mac, ip in router.leases())

            # the outside host answers, through the router
            assert ping(lan_host, OUTSIDE, count=2)
            # and sees the router's trunk address, not the LAN host's: masquerade
            server = ns_socket(outside, socket.AF_INET, socket.SOCK_DGRAM)
            client = ns_socket(lan_host, socket.AF_INET, socket.SOCK_DGRAM)
            with server, client:
                server.bind((OUTSIDE, 5555))
                server.settimeout(5)
                client.sendto(b"hello", (OUTSIDE, 5555))
                data, (source, _port) = server.recvfrom(100)
            assert data == b"hello" and source == "198.51.100.2"
            # the outside cannot reach into the LAN (forward policy drop)
            with IPRoute(netns=outside, flags=0) as ipr:
                ipr.route("add", dst="10.77.1.0/24", gateway="198.51.100.2")
            assert not ping(outside, lease["ip"])

            # DNS: dnsmasq answers for the router's own name
            answer = sys_command(["busybox", "nslookup", f"router.{router.domain}",
                                  "10.77.1.1"], netns=lan_host, timeout=15)
            assert "10.77.1.1" in answer.stdout.split("router.")[-1]
        # everything went away with the router
        assert router.namespace not in list_namespaces()
        assert not Interface(router.lan_port).exists
        assert not os.path.exists(f"/proc/{pid}")
        assert not os.path.exists(f"/proc/{keeper}"), "dnsmasq's log keeper outlived it"
        assert Interface(trunk).exists  # the trunk is the caller's
    finally:
        _delete(trunk, host_port)


def test_bridged_router_carries_layer2_to_the_trunk(netns: Any, name: Any) -> None:
    outside, lan_host = netns(), netns()
    trunk, host_port = name("tr"), name("p")
    veth_into(trunk, outside, address=f"{OUTSIDE}/24")
    veth_into(host_port, lan_host, address="198.51.100.50/24")
    try:
        with Router(name("r"), trunk=trunk) as router, Switch(name("sw")) as sw:
            sw.connect(router)
            sw.connect(host_port)
            assert Interface(trunk).master == router.name
            assert ping(lan_host, OUTSIDE, count=2)
            # layer 2: the outside sees the LAN host's own MAC
            mac = Interface("eth0", netns=lan_host).mac
            neigh = sys_command(["cat", "/proc/net/arp"], netns=outside).stdout
            assert mac is not None and mac in neigh
        assert Interface(trunk).master is None
        assert not Interface(router.name).exists
    finally:
        _delete(trunk, host_port)


def test_router_bad_input_builds_nothing(name: Any) -> None:
    before = set(list_namespaces())
    with pytest.raises(NotFoundError, match="trunk"):
        Router(name("r"), trunk="nothere0", mode="nat",
               trunk_address="198.51.100.2/24")
    with pytest.raises(NotFoundError, match="trunk"):
        Router(name("r"), trunk="nothere0")
    assert set(list_namespaces()) == before
    with pytest.raises(ConfigError, match="does not parse"):
        Router("r", trunk="lo", mode="nat", subnet="10.1.2.300/24",
               trunk_address="198.51.100.2/24")
    with pytest.raises(ConfigError, match="trunk_address"):
        Router("r", trunk="lo", mode="nat")
    with pytest.raises(ConfigError, match="overlaps"):
        Router("r", trunk="lo", mode="nat", subnet="198.51.100.0/25",
               trunk_address="198.51.100.2/24")
    with pytest.raises(ConfigError, match="nat"):
        Router("r", trunk="lo", dhcp=True)
    with pytest.raises(ConfigError, match="too long"):
        Router("r" * 15, trunk="lo")
