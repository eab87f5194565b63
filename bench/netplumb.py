"""Network plumbing: N VirtualNics (veth + namespace + macvtap) and a switch, made and removed.

vmanager (netlink through pyroute2) against the same objects made with ``ip``
subprocesses: the baseline is the only place ``ip`` runs, as argv lists. Only
namespaces and links this benchmark creates are touched; everything is
removed, also on failure.
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
from vmanager.net import Namespace, Switch, VirtualNic, list_namespaces, random_mac

PREFIX = "vmbench"  # every name this benchmark makes starts with it


def _ip(*args: str) -> bytes:
    return subprocess.run(["ip", *args], check=True, capture_output=True,
                          stdin=subprocess.DEVNULL).stdout


def _vmanager_round(n: int, tag: str) -> float:
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
            while made:
                made.pop().close()
        return t()
    finally:
        while made:
            with contextlib.suppress(Exception):
                made.pop().close()


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
            for r in range(reps):
                vm.append(_vmanager_round(n, f"v{r % 10}"))
                ip.append(_ip_round(n, f"i{r % 10}", node_dir))
            row = Row(f"plumbing {n} NICs + switch, make+remove", "s",
                      baseline_name="ip subprocesses",
                      goal=">= 500 NICs/s" + (", <= 2 s" if n == 100 else ""))
            row.pair(vm, ip)
            assert row.value is not None and row.baseline is not None
            rate = n / row.value.median
            row.met = rate >= 500 and (n != 100 or row.value.median <= 2.0)
            row.note = (f"{rate:.0f} NICs/s (ip: {n / row.baseline.median:.0f} NICs/s); "
                        "each NIC has its own namespace")
            row.extra = {"nics_per_s": rate, "ip_nics_per_s": n / row.baseline.median}
            rows.append(row)
    finally:
        stale = leftovers()
    if stale:
        raise RuntimeError(f"left behind: {stale}")
    return rows
