"""containerlab topology files: the mapping (unit) and a lab of tiny guests brought up from one.

The guests' traffic stays on the lab's own switches; the host talks to the
nodes' management addresses on the lab's management switch only.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmanager import lab as labs
from vmanager.errors import LabFileError
from vmanager.net import stable_mac
from vmanager.state.persist import attach, detach
from vmcli import ok, vm

TOPO = """\
name: {name}
mgmt:
  network: {name}-mgmt
  ipv4-subnet: {subnet}
topology:
  defaults:
    kind: linux
  kinds:
    linux:
      image: tiny
      memory: 128Mb
  nodes:
    r1:
      mgmt-ipv4: {r1}
    r2:
      cpu: 1
    sw:
      kind: bridge
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
    - endpoints: ["r2:eth2", "sw:port1"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.clab.yml"
    path.write_text(text)
    return path


def test_nodes_links_mgmt_and_inheritance_map_onto_a_lab(tmp_path: Path) -> None:
    lab = labs.load(write(tmp_path, TOPO.format(name="demo", subnet="172.20.20.0/24",
                                                r1="172.20.20.11")))
    assert lab.name == "demo"
    assert [m.name for m in lab.machines] == ["clab-demo-r1", "clab-demo-r2"]
    r1, r2 = lab.machines
    assert r1.guest == "tiny" and r1.memory == 128 and r2.cpus == 1
    mgmt = r1.nics[0].switch
    assert all(m.nics[0].switch == mgmt for m in lab.machines)
    assert len(r1.nics) == 2 and len(r2.nics) == 3
    assert r1.nics[1].switch == r2.nics[1].switch != mgmt  # a point-to-point segment
    assert r2.nics[2].switch == "sw"
    assert {s.name for s in lab.switches} >= {mgmt, "sw", r1.nics[1].switch}
    (router,) = lab.routers
    assert router.mode == "nat" and router.subnet == "172.20.20.0/24" and router.switch == mgmt
    assert router.dhcp_hosts == ((stable_mac("clab-demo-r1", 0), "172.20.20.11"),)
    # the router's outside is a namespace of the lab: nothing leads out of the host
    (host,) = lab.hosts
    assert router.trunk == host.name
    switch = next(s for s in lab.switches if s.name == mgmt)
    assert switch.address == "172.20.20.127/24"


def test_defaults_without_mgmt_and_prefixes(tmp_path: Path) -> None:
    lab = labs.load(write(tmp_path, "name: x\nprefix: ''\ntopology:\n  nodes:\n"
                                    "    a: {kind: linux, image: tiny}\n"))
    assert [m.name for m in lab.machines] == ["a"]
    assert lab.routers[0].subnet == "172.20.20.0/24"
    lab = labs.load(write(tmp_path, "name: x\nprefix: lab\ntopology:\n  nodes:\n"
                                    "    a: {kind: linux, image: tiny}\n"))
    assert [m.name for m in lab.machines] == ["lab-x-a"]


@pytest.mark.parametrize(("body", "line", "field", "words"), [
    ("name: x\ntopology:\n  nodes:\n    a:\n      kind: srl\n      image: ghcr.io/srl\n",
     5, "topology.nodes.a.kind", "container image kind"),
    ("name: x\ntopology:\n  nodes:\n    a:\n      image: tiny\n      binds: [a:b]\n",
     6, "topology.nodes.a.binds", "container setting"),
    ("name: x\ntopology:\n  nodes:\n    a:\n      image: tiny\n      colour: red\n",
     6, "topology.nodes.a.colour", "unknown node key"),
    ("name: x\ntopology:\n  nodes:\n    a: {image: tiny}\n  links:\n"
     "    - endpoints: [\"a:eth1\", \"b:eth1\"]\n", 6, "topology.links.0.endpoints.1",
     "no node 'b'"),
    ("name: x\ntopology:\n  nodes:\n    a: {image: tiny}\n    b: {image: tiny}\n  links:\n"
     "    - endpoints: [\"a:eth0\", \"b:eth1\"]\n", 7, "topology.links.0.endpoints.0",
     "management NIC"),
    ("name: x\ntopology:\n  nodes:\n    a: {image: tiny}\n    b: {image: tiny}\n  links:\n"
     "    - endpoints: [\"a:e1-1\", \"b:eth1\"]\n", 7, "topology.links.0.endpoints.0",
     "eth1, eth2"),
    ("name: x\ntopology:\n  nodes:\n    a:\n      image: alpine:latest\n", 5,
     "topology.nodes.a.image", "container images cannot boot"),
    ("name: x\nmgmt:\n  ipv4-subnet: 10.9.0.0/24\ntopology:\n  nodes:\n    a:\n"
     "      image: tiny\n      mgmt-ipv4: 10.9.0.1\n", 8, "topology.nodes.a.mgmt-ipv4",
     "management router"),
    ("name: x\nmgmt:\n  external-access: true\ntopology:\n  nodes: {}\n", 3,
     "mgmt.external-access", "not supported"),
    ("name: x\ntopology:\n  defaults:\n    kind: linux\n    env: {A: 1}\n  nodes:\n"
     "    a: {image: tiny}\n", 5, "topology.defaults.env", "container setting"),
    ("name: x\nspeed: 3\ntopology:\n  nodes: {}\n", 2, "speed", "unknown key"),
])
def test_bad_files_name_file_line_and_field(tmp_path: Path, body: str, line: int, field: str,
                                            words: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(LabFileError) as caught:
        labs.load(path)
    exc = caught.value
    assert (exc.path, exc.line, exc.field) == (str(path), line, field), str(exc)
    assert words in str(exc)


def test_a_disk_image_node_boots_from_that_file(tmp_path: Path) -> None:
    disk = tmp_path / "node.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(100))
    lab = labs.load(write(tmp_path, "name: x\ntopology:\n  nodes:\n"
                                    "    a: {kind: linux, image: node.qcow2, memory: 1Gb}\n"))
    (m,) = lab.machines
    assert m.guest is None and m.memory == 1024
    assert m.disks[0].path == str(disk) and m.disks[0].format == "qcow2"


def test_an_image_name_node_boots_an_overlay_of_that_image(tmp_path: Path) -> None:
    lab = labs.load(write(tmp_path, "name: x\ntopology:\n  nodes:\n"
                                    "    a: {kind: linux, image: debian-12, memory: 1Gb}\n"))
    (m,) = lab.machines
    assert m.guest == "debian-12" and not m.disks
    assert m.definition()["guest"] == "debian-12"  # what up records and starts from


# -- in guests ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clab(tiny: object,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if os.geteuid() != 0:
        pytest.skip("labs need root")
    t = secrets.token_hex(2)
    octet = 16 + int(t, 16) % 200
    names = {"name": f"k{t}", "subnet": f"172.30.{octet}.0/24", "r1": f"172.30.{octet}.11",
             "prefix": f"172.30.{octet}"}
    path = tmp_path_factory.mktemp("clab") / "t.clab.yml"
    path.write_text(TOPO.format(**names))
    ok("up", str(path), "--wait-ready")
    try:
        yield path, names
    finally:
        vm("down", str(path))


def run(machine: str, command: str) -> str:
    m = attach(machine, timeout=30)
    try:
        return m.succeed(command, timeout=60)
    finally:
        detach(m)


@pytest.mark.guest
@pytest.mark.net
def test_clab_lab_mgmt_dhcp_reservation_links_and_host_reach(
        clab: tuple[Path, dict[str, str]]) -> None:
    path, n = clab
    r1, r2 = f"clab-{n['name']}-r1", f"clab-{n['name']}-r2"
    dhcp = ("ip link set eth0 up && udhcpc -i eth0 -q -n -t 10 -T 1 "
            "-s /usr/share/udhcpc/default.script")
    run(r1, dhcp)
    run(r2, dhcp)
    assert f"inet {n['r1']}/24" in run(r1, "ip -4 addr show eth0")
    r2_addr = run(r2, "ip -4 addr show eth0").split("inet ")[1].split("/")[0]
    assert r2_addr.startswith(n["prefix"] + ".") and r2_addr != n["r1"]
    # eth1 <-> eth1 is their own segment
    run(r1, "ip link set eth1 up && ip addr add 10.201.7.1/30 dev eth1")
    run(r2, "ip link set eth1 up && ip addr add 10.201.7.2/30 dev eth1")
    assert "1 packets received" in run(r1, "ping -c 1 -W 3 10.201.7.2")
    # the host reaches both management addresses (on the lab's management switch)
    for address in (n["r1"], r2_addr):
        r = subprocess.run(["busybox", "ping", "-c", "1", "-W", "3", address],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (address, r.stdout, r.stderr)
    info = json.loads(ok("inspect", str(path), "--json"))
    assert {m["name"] for m in info["machines"]} == {r1, r2}
    mgmt = {m["name"]: m["nics"][0]["address"] for m in info["machines"]}
    assert mgmt[r1] == n["r1"] and mgmt[r2] == r2_addr
    svg = path.with_suffix(".svg")
    ok("graph", str(path), "-o", str(svg))
    assert r1 in html.unescape(svg.read_text())  # Graphviz writes '-' as &#45;
