"""VirtualNic: frames written into QEMU's descriptor come out on the switch and back."""

from __future__ import annotations

import os
import select
import socket
import stat
from typing import Any

import pytest
from _nettools import ns_socket, veth_into
from pyroute2 import IPRoute

from vmanager.errors import ConfigError, HostError, NotFoundError, StateError
from vmanager.net import Interface, Switch, VirtualNic, all_links, stable_mac
from vmanager.net.nic import NicMode

VNET_HDR = bytes(10)  # virtio_net_hdr: the fd has IFF_VNET_HDR, as QEMU expects
ETHERTYPE = 0x88B5    # "local experimental": nothing else on the wire uses it


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _frame(dst: str, src: str, payload: bytes) -> bytes:
    return _mac_bytes(dst) + _mac_bytes(src) + ETHERTYPE.to_bytes(2, "big") + payload


def _read_frame(fd: int, payload: bytes, *, header: int, timeout: float = 3.0) -> bytes | None:
    """Read frames from ``fd`` until one carries ``payload`` (other traffic is skipped)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    for _ in range(50):
        if not poller.poll(timeout * 1000):
            return None
        data = os.read(fd, 65536)[header:]
        if data[12:14] == ETHERTYPE.to_bytes(2, "big") and payload in data:
            return data
    return None


@pytest.mark.parametrize("mode", ["macvtap", "tap"])
def test_frames_cross_from_nic_fd_to_a_namespace_and_back(mode: NicMode, netns: Any,
                                                          name: Any) -> None:
    vm, observer = netns(), netns()
    probe = name("p")
    veth_into(probe, observer)
    try:
        with Switch(name("sw")) as sw, \
                VirtualNic(name("vn"), namespace=vm, mac=stable_mac(vm, 0), mode=mode) as nic:
            sw.connect(nic)
            sw.connect(probe)
            # the kernel objects are where the design says
            assert Interface(nic.port).exists
            assert set(all_links(netns=vm)) >= {nic.sink, nic.device}
            assert Interface(nic.sink, netns=vm).master == nic.tap_bridge
            raw = ns_socket(observer, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
            fd = nic.open_fd()
            try:
                raw.bind(("eth0", ETHERTYPE))
                raw.settimeout(3)
                # guest -> world: write into QEMU's descriptor, capture in the observer
                out = _frame("ff:ff:ff:ff:ff:ff", nic.mac, b"from-the-guest")
                os.write(fd, VNET_HDR + out)
                while True:
                    got = raw.recv(65536)
                    if b"from-the-guest" in got:
                        break
                assert got[6:12] == _mac_bytes(nic.mac)
                # world -> guest: send from the observer, read from the descriptor
                observer_mac = Interface("eth0", netns=observer).mac
                assert observer_mac is not None
                raw.send(_frame(nic.mac, observer_mac, b"to-the-guest"))
                back = _read_frame(fd, b"to-the-guest", header=len(VNET_HDR))
                assert back is not None and back[:6] == _mac_bytes(nic.mac)
            finally:
                os.close(fd)
                raw.close()
            if mode == "macvtap":
                assert nic.device_node is not None
                node = os.stat(nic.device_node)
                assert stat.S_ISCHR(node.st_mode) and stat.S_IMODE(node.st_mode) == 0o600
                assert stat.S_IMODE(os.stat(nic.device_node.parent).st_mode) == 0o700
                node_path = nic.device_node
        assert not Interface(nic.port).exists
        assert not set(all_links(netns=vm)) & {nic.sink, nic.device}
        if mode == "macvtap":
            assert not node_path.exists()
    finally:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=probe):
                ipr.link("del", index=index)


def test_nic_without_namespace_lives_on_the_host(name: Any) -> None:
    with VirtualNic(name("vn")) as nic:
        assert Interface(nic.sink).exists and Interface(nic.device).exists
        fd = nic.open_fd()
        os.close(fd)
    assert not Interface(nic.port).exists and not Interface(nic.device).exists


def test_bad_input_is_refused_and_nothing_is_left(name: Any, netns: Any) -> None:
    with pytest.raises(ConfigError, match="too long"):
        VirtualNic("x" * 15)
    with pytest.raises(ConfigError):
        VirtualNic(mac="01:00:5e:00:00:01")  # multicast
    with pytest.raises(ConfigError):
        VirtualNic(mode="bridge")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        VirtualNic(name("vn"), namespace="vmanager-no-such-ns")
    nic = VirtualNic(name("vn"), create=False)
    with pytest.raises(StateError):
        nic.open_fd()
    with nic, pytest.raises(ConfigError, match="already exists"):
        VirtualNic(nic.name)


def test_failure_halfway_rolls_back(name: Any, netns: Any, monkeypatch: Any) -> None:
    ns = netns()
    nic = VirtualNic(name("vn"), namespace=ns, create=False)

    def broken(*_args: object) -> None:
        raise HostError("simulated failure after the links were made")

    monkeypatch.setattr(nic, "_make_device_node", broken)
    with pytest.raises(HostError, match="simulated"):
        nic.create()
    assert not Interface(nic.port).exists
    assert set(all_links(netns=ns)) == {"lo"}
    with pytest.raises(StateError):
        nic.create()
    nic.close()


def test_tap_mode_allows_one_descriptor_at_a_time(name: Any, netns: Any) -> None:
    with VirtualNic(name("vn"), namespace=netns(), mode="tap") as nic:
        fd = nic.open_fd()
        try:
            with pytest.raises(HostError):
                nic.open_fd()
        finally:
            os.close(fd)
        os.close(nic.open_fd())  # free again once the first is closed


def test_qemu_args() -> None:
    nic = VirtualNic("vnq", mac="52:54:00:00:00:01", create=False)
    assert nic.qemu_args(7, index=0) == [
        "-netdev", "tap,id=net0,fd=7",
        "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,id=nic0"]
