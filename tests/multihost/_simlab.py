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
    boot = tiny_boot()
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


def tiny_boot() -> str:
    """The lab-file lines that boot the tiny guest this host built, by path: the servers
    (namespaces without a route out) could not fetch Debian packages to build one."""
    from vmanager.guests import tiny_guest
    guest = tiny_guest()
    return (f'kernel = "{guest.kernel}"\ninitrd = "{guest.initrd}"\n'
            f'append = "{guest.append()}"')


def vlan_lab(sim: Simulation, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """One VLAN-aware switch stretched over two servers: a on s1 and b on s2 in VLAN 10,
    c on s2 in VLAN 20."""
    t = unique_name("")
    n = {"lab": f"mv{t}", "sw": f"vl{t}", "a": f"a{t}", "b": f"b{t}", "c": f"c{t}"}
    machines = ""
    for m, server, vid in (("a", "s1", 10), ("b", "s2", 10), ("c", "s2", 20)):
        machines += (f"\n[machines.{n[m]}]\n{tiny_boot()}\nmemory = 192\n"
                     f'server = "{server}"\nnics = [{{ switch = "{n["sw"]}", vlan = {vid} }}]\n')
    path = tmp_path / "vlans.toml"
    path.write_text(f"""
[lab]
name = "{n['lab']}"
allow_paths = ["/"]  # the tiny guest's kernel lives outside this directory

{sim.servers_toml(vmanager=VMANAGER)}
[switches.{n['sw']}]
vlan_filtering = true
{machines}""")
    return path, n


def server_vxlans(sim: Simulation, server_name: str) -> dict[str, tuple[int, str | None]]:
    """The VXLAN links in a server's namespace: name -> (VNI, the bridge it is on)."""
    from vmanager.net._netlink import attr, linkinfo_kind, rtnl
    found: dict[str, tuple[int, str | None]] = {}
    with rtnl(server(sim, server_name).netns) as ipr:
        links = list(ipr.link("dump"))
        names = {int(m["index"]): str(attr(m, "IFLA_IFNAME")) for m in links}
        for m in links:
            if linkinfo_kind(m) == "vxlan":
                data = m.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
                found[str(attr(m, "IFLA_IFNAME"))] = (int(data.get_attr("IFLA_VXLAN_ID")),
                                                      names.get(attr(m, "IFLA_MASTER")))
    return found


def server_nft(sim: Simulation, server_name: str, *args: str) -> str:
    """``nft ARGS`` run in a server's namespace (its output; "" if it failed)."""
    from vmanager.net.host import sys_command
    r = sys_command(["nft", *args], netns=server(sim, server_name).netns, check=False,
                    timeout=30)
    return r.stdout if r.returncode == 0 else ""


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
