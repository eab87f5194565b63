"""Network plumbing: N VirtualNics (veth + namespace + macvtap) and a switch, made and removed.

vmanager (netlink through pyroute2) against the same objects made with ``ip``
subprocesses: the baseline is the only place ``ip`` runs, as argv lists. Only
namespaces and links this benchmark creates are touched; everything is
removed, also on failure.

The 10-NIC row makes the objects one by one and removes them with
``vmanager.net.teardown`` (one kernel clean-up pass); the 100-NIC row uses a
``vmanager.net.Group``: namespaces, then NICs, made from a few threads
(``create_all``), everything removed in one pass when the group closes. Both
return only when every object is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.context import Context
from bench.core import Row, timer
from vmanager.net import (
    Group,
    Namespace,
    Switch,
    VirtualNic,
    list_namespaces,
    random_mac,
    teardown,
)

PREFIX = "vmbench"  # every name this benchmark makes starts with it


def _ip(*args: str) -> bytes:
    return subprocess.run(["ip", *args], check=True, capture_output=True,
                          stdin=subprocess.DEVNULL).stdout


def _vmanager_round(n: int, tag: str) -> float:
    """One by one, then one teardown."""
    made: list[Namespace | VirtualNic | Switch] = []
    try:
        with timer() as t:
            sw = Switch(f"{PREFIX}{tag}sw")
            made.append(sw)
            for i in range(n):
                ns = Namespace(f"{PREFIX}-{tag}{i}")
                made.append(ns)
                nic = VirtualNic(f"{PREFIX[:4]}{tag}{i}", namespace=ns.name)
                made.append(nic)
                sw.connect(nic)
            teardown(reversed(made))
        return t()
    finally:
        with contextlib.suppress(Exception):
            teardown(reversed(made))


def _group_round(n: int, tag: str) -> float:
    """A Group: namespaces, then NICs, made in parallel; one teardown at the end."""
    with timer() as t, Group() as group:
        sw = group.enter(Switch(f"{PREFIX}{tag}sw"))
        nss = group.create_all(Namespace(f"{PREFIX}-{tag}{i}", create=False)
                               for i in range(n))
        nics = group.create_all(VirtualNic(f"{PREFIX[:4]}{tag}{i}", namespace=ns.name,
                                           create=False) for i, ns in enumerate(nss))
        for nic in nics:
            sw.connect(nic)
    return t()


def _ip_round(n: int, tag: str, node_dir: Path) -> float:
    bridge = f"{PREFIX}{tag}sw"
    nss: list[str] = []
    nodes: list[Path] = []
    made_bridge = False
    try:
        with timer() as t:
            _ip("link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            made_bridge = True
            _ip("link", "set", bridge, "up")
            for i in range(n):
                ns, port = f"{PREFIX}-{tag}{i}", f"{PREFIX[:4]}{tag}{i}"
                sink, dev = port + "s", port + "t"
                _ip("netns", "add", ns)
                nss.append(ns)
                _ip("link", "add", port, "type", "veth", "peer", "name", sink, "netns", ns)
                _ip("-n", ns, "link", "add", "link", sink, "name", dev, "address",
                    random_mac(), "type", "macvtap", "mode", "passthru")
                _ip("-n", ns, "link", "set", sink, "up")
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("link", "set", port, "master", bridge, "up")
                # the device node QEMU would open, as VirtualNic makes it
                ifindex = json.loads(_ip("-n", ns, "-j", "link", "show", "dev", dev))[0]["ifindex"]
                numbers = _ip("netns", "exec", ns, "cat",
                              f"/sys/class/net/{dev}/macvtap/tap{ifindex}/dev")
                major, minor = (int(x) for x in numbers.decode().strip().split(":"))
                node = node_dir / f"{ns}.{dev}"
                os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
                nodes.append(node)
            for i in reversed(range(n)):
                nodes.pop().unlink()
                _ip("link", "del", f"{PREFIX[:4]}{tag}{i}")
                _ip("netns", "del", nss.pop())
            _ip("link", "del", bridge)
            made_bridge = False
        return t()
    finally:
        for node in nodes:
            node.unlink(missing_ok=True)
        for ns in nss:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if made_bridge:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def leftovers() -> list[str]:
    """Namespaces or host links with the benchmark's prefix (should be none)."""
    links = json.loads(_ip("-j", "link", "show"))
    names = [x["ifname"] for x in links if x["ifname"].startswith((PREFIX, PREFIX[:4]))]
    return names + [n for n in list_namespaces() if n.startswith(PREFIX)]


def plumbing(ctx: Context) -> list[Row]:
    stale = leftovers()
    if stale:
        raise RuntimeError(f"objects from an earlier run are still there: {stale}")
    node_dir = ctx.work / "nodes"
    node_dir.mkdir(mode=0o700, exist_ok=True)
    sizes: Sequence[tuple[int, int]] = ((10, ctx.reps(2, 10)), (100, ctx.reps(1, 5)))
    rows = []
    try:
        for n, reps in sizes:
            vm: list[float] = []
            ip: list[float] = []
            vmanager_round = _group_round if n >= 100 else _vmanager_round
            for r in range(reps):
                # alternate which goes first: the kernel's clean-up of one round
                # may still run while the next starts
                for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                    if which == 0:
                        vm.append(vmanager_round(n, f"v{r % 10}"))
                    else:
                        ip.append(_ip_round(n, f"i{r % 10}", node_dir))
            how = "Group, create_all" if n >= 100 else "one by one + teardown()"
            # the goal is for 100 NICs; 10 show the one-by-one path
            row = Row(f"plumbing {n} NICs + switch, make+remove", "s",
                      baseline_name="ip subprocesses", goal="<= 0.2x ip" if n >= 100 else "")
            row.pair(vm, ip)
            assert row.value is not None and row.baseline is not None
            assert row.ratio is not None
            rate = n / row.value.median
            row.met = row.ratio.median <= 0.2 if n >= 100 else None
            row.note = (f"{how}; {rate:.0f} NICs/s (ip: {n / row.baseline.median:.0f} "
                        "NICs/s); each NIC has its own namespace")
            row.extra = {"nics_per_s": rate, "ip_nics_per_s": n / row.baseline.median}
            rows.append(row)
    finally:
        stale = leftovers()
    if stale:
        raise RuntimeError(f"left behind: {stale}")
    return rows
