"""Host interfaces, routes and sys_command, checked against namespaces we make."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from _nettools import veth_into
from pyroute2 import IPRoute

from vmanager.errors import CommandError, ConfigError, HostError, NotFoundError
from vmanager.net import (
    HostInterfaces,
    Interface,
    all_links,
    interfaces,
    routes,
    stable_mac,
    sys_command,
)


def test_sys_command_returns_output_and_status() -> None:
    result = sys_command(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")


def test_sys_command_failure_carries_argv_status_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        sys_command(["sh", "-c", "echo broken >&2; exit 4"])
    assert info.value.returncode == 4
    assert info.value.argv == ["sh", "-c", "echo broken >&2; exit 4"]
    assert "broken" in info.value.stderr and "broken" in str(info.value)


def test_sys_command_refuses_a_shell_string() -> None:
    with pytest.raises(ConfigError, match="argv list"):
        sys_command("echo hi")


def test_sys_command_missing_program_and_timeout() -> None:
    with pytest.raises(HostError, match="not found"):
        sys_command(["/nonexistent/vmanager-test"])
    with pytest.raises(CommandError, match="did not finish") as info:
        sys_command(["sleep", "5"], timeout=0.2)
    assert info.value.returncode is None


def test_sys_command_runs_inside_a_namespace(netns: Any) -> None:
    ns = netns()
    # a fresh namespace has only a loopback device
    out = sys_command(["cat", "/proc/net/dev"], netns=ns).stdout
    assert "lo:" in out and "eth0" not in out
    with pytest.raises(NotFoundError):
        sys_command(["true"], netns="vmanager-no-such-ns")


def test_interface_reads_and_changes_the_kernel(netns: Any, name: Any) -> None:
    ns = netns()
    host_end = name("h")
    veth_into(host_end, ns, address="192.0.2.10/24")
    try:
        with IPRoute(netns=ns, flags=0) as ipr:
            ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.1")
        found = all_links(netns=ns)
        assert list(found) == ["eth0", "lo"]
        assert interfaces(netns=ns) == {}  # a veth is no physical NIC
        eth0 = found["eth0"]
        assert eth0.ip == ipaddress.IPv4Address("192.0.2.10")
        assert ipaddress.ip_interface("192.0.2.10/24") in eth0.addresses
        assert eth0.gateway == ipaddress.IPv4Address("192.0.2.1")
        assert any(r.is_default for r in eth0.routes)
        assert eth0.mac is not None and len(eth0.mac) == 17
        eth0.down()
        assert not eth0.is_up and eth0.state == "down"
        eth0.up()
        assert eth0.is_up
        table = routes(netns=ns)
        assert ipaddress.ip_network("192.0.2.0/24") in {r.destination for r in table}
        lazy = HostInterfaces(netns=ns, physical=False)
        assert "eth0" in lazy and len(lazy) == 2
        assert len(HostInterfaces(netns=ns)) == 0
        with pytest.raises(NotFoundError):
            _ = Interface("nothere0", netns=ns).mac
    finally:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=host_end)[0])


def test_all_links_has_every_link_of_the_host() -> None:
    found = all_links()
    assert "lo" in found and set(interfaces()) <= set(found)
    for iface in found.values():
        assert iface.state
    assert isinstance(routes(), tuple)


def test_stable_mac_is_stable_local_and_unicast() -> None:
    mac = stable_mac("web", 0)
    assert mac == stable_mac("web", 0) != stable_mac("web", 1) != stable_mac("db", 0)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    with pytest.raises(ConfigError):
        stable_mac("web", -1)
