"""Helpers for the networking tests (imported by the test modules)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from vmanager.net import sys_command


def veth_into(host_name: str, netns: str, *, inner: str = "eth0",
              address: str | None = None) -> None:
    """A veth pair: ``host_name`` on the host, ``inner`` in ``netns`` (up, addressed)."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_name, kind="veth",
                     peer={"ifname": inner, "net_ns_fd": fd})
            ipr.link("set", index=ipr.link_lookup(ifname=host_name)[0], state="up")
    finally:
        os.close(fd)
    with IPRoute(netns=netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname=inner)[0]
        if address:
            ip, prefix = address.split("/")
            ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def ping(netns: str, address: str, *, count: int = 1, wait: int = 1) -> bool:
    """Whether ``address`` answers an ICMP echo sent from inside ``netns``."""
    result = sys_command(["busybox", "ping", "-c", str(count), "-W", str(wait), address],
                         netns=netns, check=False, timeout=count * wait + 10)
    return result.returncode == 0


def ns_socket(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that lives in ``netns`` (made by a forked child, handed back)."""
    sock: socket.socket = pyroute2_netns.create_socket(netns, family, kind, proto, flags=0)
    return sock


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
