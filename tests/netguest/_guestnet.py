"""Helpers for the guest networking tests (imported by the tests and conftest)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from vmanager import Machine
from vmanager.net import Switch, sys_command

#: Every name this session makes contains it (so a shared host's other runs
#: are not blamed for their objects).
TAG = "g" + secrets.token_hex(2)
_counter = count()


def name(prefix: str = "") -> str:
    """A short unique name (fits an ifname with a suffix), tagged with :data:`TAG`."""
    return f"{TAG}{prefix}{next(_counter)}"


def nft_tables() -> set[str]:
    """``family name`` of every nftables table in the host namespace."""
    result = sys_command(["nft", "list", "tables"], check=False, timeout=30)
    return {line.removeprefix("table ").strip() for line in result.stdout.splitlines()
            if line.startswith("table ")}


def ours() -> set[str]:
    """This session's links, namespaces and nft tables that exist right now."""
    with IPRoute() as ipr:
        links = {str(m.get_attr("IFLA_IFNAME")) for m in ipr.link("dump")}
    found = {f"link {n}" for n in links if TAG in n}
    found |= {f"netns {n}" for n in pyroute2_netns.listnetns() if TAG in n}
    found |= {f"nft {t}" for t in nft_tables() if TAG in t}
    return found


@dataclass
class Lab:
    """Two running tiny guests, ``a`` and ``b``, their ``eth0`` on switch ``sw``."""

    a: Machine
    b: Machine
    sw: Switch
    a_ip: str = "10.203.0.1"
    b_ip: str = "10.203.0.2"

def guest_ifname(m: Machine, mac: str, *, timeout: float = 30.0) -> str:
    """The guest's name for the interface with ``mac`` (waits for it to appear)."""
    script = (f'for i in /sys/class/net/*; do [ "$(cat $i/address)" = "{mac}" ] && '
              'basename $i && exit 0; done; exit 1')
    return m.wait_until_succeeds(script, timeout=timeout).strip()


def guest_ping(m: Machine, address: str, *, count: int = 1, wait: int = 2) -> bool:
    """Whether ``address`` answers ICMP echo sent from the guest."""
    return m.execute(f"ping -c {count} -W {wait} {address}",
                     timeout=count * wait + 30).status == 0


def veth_into(host_end: str, netns: str, address: str, *, inner: str = "eth0") -> None:
    """A veth: ``host_end`` (up, no address) on the host, ``inner`` (``address``) in ``netns``."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_end, kind="veth",
                     peer={"ifname": inner, "net_ns_fd": fd})
            ipr.link("set", index=ipr.link_lookup(ifname=host_end)[0], state="up")
    finally:
        os.close(fd)
    with IPRoute(netns=netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname=inner)[0]
        ip, prefix = address.split("/")
        ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def delete_link(ifname: str) -> None:
    """Delete a host link the test made (both ends of a veth go)."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            ipr.link("del", index=index)


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()
