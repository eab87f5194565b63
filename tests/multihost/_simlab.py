"""Helpers of the multi-server tests: a two-server lab file, a server's own view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from vmanager.multihost import SimServer, Simulation
from vmtest_util import unique_name

VMANAGER = f"{sys.executable} -m vmanager.cli.main"


def two_server_lab(sim: Simulation, tmp_path: Path, *, extra: str = "",
                   disk_a: Path | None = None, disk_size: str = "32M",
                   disks_a: str | None = None) -> tuple[Path, dict[str, str]]:
    """A lab of machine a on s1 and b on s2 on one switch; a's disks: ``disk_a`` of
    ``disk_size``, or ``disks_a`` (the entries of a TOML ``disks`` list)."""
    # The tiny guest this host built, by path: the servers (namespaces without a
    # route out) could not fetch Debian packages to build one themselves.
    from vmanager.guests import tiny_guest
    guest = tiny_guest()
    boot = (f'kernel = "{guest.kernel}"\ninitrd = "{guest.initrd}"\n'
            f'append = "{guest.append()}"')
    t = unique_name("")
    n = {"lab": f"mh{t}", "sw": f"lan{t}", "a": f"a{t}", "b": f"b{t}"}
    body = f"""
[lab]
name = "{n['lab']}"
allow_paths = ["/"]  # the tiny guest's kernel and disks live outside this directory

{sim.servers_toml(vmanager=VMANAGER)}
[switches.{n['sw']}]

[machines.{n['a']}]
{boot}
memory = 256
server = "s1"
{f'disks = [{{ path = "{disk_a}", size = "{disk_size}" }}]' if disk_a else ""}
{f"disks = [{disks_a}]" if disks_a else ""}
nics = [{{ switch = "{n['sw']}" }}]

[machines.{n['b']}]
{boot}
memory = 256
server = "s2"
nics = [{{ switch = "{n['sw']}" }}]
{extra}"""
    path = tmp_path / "lab.toml"
    path.write_text(body)
    return path, n


def remote_json(sim: Simulation, server: str, *args: str) -> Any:
    s = next(x for x in sim.servers if x.name == server)
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={sim.known_hosts}",
            "-i", str(sim.identity), f"root@{s.address}", "--", VMANAGER, "--json", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def server(sim: Simulation, name: str) -> SimServer:
    return next(x for x in sim.servers if x.name == name)


def root_qdisc(sim: Simulation, server_name: str, machine: str, index: int
               ) -> tuple[str, int] | None:
    """(kind, rate in bit/s) of the root qdisc on NIC ``index``'s sink of ``machine``,
    read from that server's kernel objects (its namespace, through its sshd's mounts)."""
    from vmanager.net import VirtualNic, stable_mac
    from vmanager.net._netlink import _wrap
    from vmanager.net._nsthread import netlink_socket
    s = server(sim, server_name)
    assert s.process is not None
    path = f"/proc/{s.process.pid}/root/run/netns/{machine}"
    sink = VirtualNic(namespace=machine, mac=stable_mac(machine, index), create=False).sink
    ipr = _wrap(netlink_socket(path))
    try:
        link = ipr.link_lookup(ifname=sink)[0]
        for msg in ipr.get_qdiscs(index=link):
            if msg["parent"] == 0xFFFFFFFF:
                kind = str(msg.get_attr("TCA_KIND"))
                rate = 0
                if kind == "tbf":
                    rate = int(msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"]) * 8
                return kind, rate
        return None
    finally:
        ipr.close()


def pcap_frames(path: Path) -> int:
    """How many frames a pcap file holds (its records, walked by their headers)."""
    data = path.read_bytes()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"), data[:4]
    order = "little" if data[:4] == b"\xd4\xc3\xb2\xa1" else "big"
    at, frames = 24, 0
    while at + 16 <= len(data):
        caplen = int.from_bytes(data[at + 8:at + 12], order)
        at += 16 + caplen
        frames += 1
    return frames
