"""Labs across two servers simulated on this machine (:mod:`vmanager.multihost`).

Each server is a namespace with its own sshd, vmanager state and /run/netns,
on an underlay bridge. The lab file lives here; ``vmanager`` runs here and
reaches the servers over SSH only. Guests on the two servers ping across the
stretched switch (VXLAN), and stay apart in different VLANs of a stretched
VLAN-aware switch; ``down`` leaves nothing on either server.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from _simlab import (
    VMANAGER,
    pcap_frames,
    remote_json,
    root_qdisc,
    server_nft,
    server_vxlans,
    two_server_lab,
    vlan_lab,
)

from vmanager.guests import TinyGuest
from vmanager.multihost import Simulation
from vmcli import ok, vm

pytestmark = [pytest.mark.guest, pytest.mark.net]

VM = VMANAGER.split()

if os.geteuid() != 0:
    pytest.skip("simulated servers need root (namespaces, sshd)", allow_module_level=True)
if not Path("/usr/sbin/sshd").exists():
    pytest.skip("needs Debian's openssh-server (scripts/setup installs it)",
                allow_module_level=True)


def test_guests_on_two_servers_ping_across_and_down_leaves_nothing(
        sim: Simulation, tmp_path: Path) -> None:
    lab, n = two_server_lab(sim, tmp_path)
    try:
        up = json.loads(ok("--json", "up", str(lab), "--wait-ready"))
        assert any(m.startswith("s1: machine") for m in up["made"])
        assert any(m.startswith("s2: machine") for m in up["made"])
        # each server has only its own machine, in its own records
        assert [m["name"] for m in remote_json(sim, "s1", "list")] == [n["a"]]
        assert [m["name"] for m in remote_json(sim, "s2", "list")] == [n["b"]]
        info = json.loads(ok("--json", "inspect", str(lab)))
        where = {m["name"]: (m["server"], m["state"]) for m in info["machines"]}
        assert where == {n["a"]: ("s1", "running"), n["b"]: ("s2", "running")}
        # exec goes to the machine's server
        ok("exec", n["a"], "--", "ip addr add 10.77.0.1/24 dev eth0 && ip link set eth0 up")
        ok("exec", n["b"], "--", "ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up")
        out = ok("exec", n["a"], "--", "ping -c 3 -W 3 10.77.0.2")
        assert " 0% packet loss" in out
        # the full 1500-byte inner MTU crosses (the underlay has 1550)
        ok("exec", n["b"], "--", "ping -c 1 -W 3 -s 1472 10.77.0.1")
        # impairments and captures of a machine's NIC are made on its server: a's rate
        # limit is a qdisc in a's namespace on s1; b's frames are captured on s2
        target = f"{n['a']}:0"
        ok("impair", str(lab), target, "--rate", "2mbit")
        assert root_qdisc(sim, "s1", n["a"], 0) == ("tbf", 2_000_000)
        shown = json.loads(ok("--json", "impair", str(lab), target, "--show"))
        assert shown["rate_bit"] == 2_000_000, shown
        pcap = tmp_path / "b.pcap"
        capture = subprocess.Popen([*VM, "capture", str(lab), f"{n['b']}:0", "-w", str(pcap),
                                    "-c", "4", "-f", "icmp"], stderr=subprocess.PIPE,
                                   text=True)
        try:
            for _ in range(40):
                if capture.poll() is not None:
                    break
                vm("exec", n["a"], "--", "ping -c 1 -W 1 10.77.0.2")
            _, err = capture.communicate(timeout=30)
        finally:
            if capture.poll() is None:
                capture.kill()
                capture.wait()
        assert capture.returncode == 0, err
        assert pcap_frames(pcap) >= 4 and pcap.stat().st_mode & 0o777 == 0o600
        ok("impair", str(lab), target, "--clear")
        assert root_qdisc(sim, "s1", n["a"], 0) != ("tbf", 2_000_000)
        # the serial console too, read on the machine's server
        from vmanager.guests import READY_LINE
        assert READY_LINE in ok("console", n["b"], "--dump")
        # up again changes nothing
        again = json.loads(ok("--json", "up", str(lab)))
        assert again["made"] == []
    finally:
        down = vm("--json", "down", str(lab))
    assert down.returncode == 0, down.stderr
    for server in ("s1", "s2"):
        assert remote_json(sim, server, "list") == []
        assert remote_json(sim, server, "net") == []
    assert sim.leftovers() == {}
    assert vm("inspect", str(lab)).returncode == 0


def test_vlans_cross_servers_on_their_own_vnis_and_stay_apart(
        sim: Simulation, tmp_path: Path) -> None:
    from vmanager.lab.stretch import vlan_vni, vni_of, vxlan_ifname
    from vmanager.net import Switch, stable_mac
    from vmanager.net._switch_state import ports_from_ruleset
    lab, n = vlan_lab(sim, tmp_path)
    a, b, c, sw = n["a"], n["b"], n["c"], n["sw"]
    table = Switch(sw, create=False).nft_table
    ports = {vxlan_ifname(n["lab"], sw, vid): vid for vid in (10, 20)}
    try:
        ok("up", str(lab), "--wait-ready")
        for i, m in enumerate((a, b, c), start=1):
            ok("exec", m, "--", f"ip addr add 10.78.0.{i}/24 dev eth0 && ip link set eth0 up")
        # each server has a VXLAN port per VLAN used on the switch anywhere in the lab
        # (s1 has no VLAN 20 machine, and still gets its port), on the VLAN's own VNI,
        # as an access port of that VLAN of its bridge (the nftables backend here)
        base = vni_of(n["lab"], sw, None)
        for server in ("s1", "s2"):
            assert server_vxlans(sim, server) == {
                name: (vlan_vni(base, vid), sw) for name, vid in ports.items()}
            rules = json.loads(server_nft(sim, server, "-j", "list", "table", "bridge", table))
            access = {p.ifname: p.vlan for p in ports_from_ruleset(rules).values()}
            assert {k: v for k, v in access.items() if k in ports} == ports, access
        # a (s1, VLAN 10) reaches b (s2, VLAN 10) across the servers
        assert " 0% packet loss" in ok("exec", a, "--", "ping -c 3 -W 3 10.78.0.2")
        # c (s2, VLAN 20) gets nothing a sends, not even its ARP broadcasts
        pcap = tmp_path / "c.pcap"
        capture = subprocess.Popen([*VM, "capture", str(lab), f"{c}:0", "-w", str(pcap),
                                    "--duration", "8", "-f",
                                    f"ether src {stable_mac(a, 0)}"],
                                   stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(2):
                r = vm("exec", a, "--", "ping -c 2 -W 2 10.78.0.3")
                assert r.returncode != 0, f"{a} (VLAN 10) reached {c} (VLAN 20):\n{r.stdout}"
            _, err = capture.communicate(timeout=60)
        finally:
            if capture.poll() is None:
                capture.kill()
                capture.wait()
        assert capture.returncode == 0, err
        assert pcap_frames(pcap) == 0
        # while b, on c's own server, still reaches a in VLAN 10
        assert " 0% packet loss" in ok("exec", b, "--", "ping -c 1 -W 3 10.78.0.1")
    finally:
        down = vm("--json", "down", str(lab))
    assert down.returncode == 0, down.stderr
    for server in ("s1", "s2"):
        assert remote_json(sim, server, "list") == []
        assert remote_json(sim, server, "net") == []
        assert server_vxlans(sim, server) == {}
        assert f"table bridge {table}" not in server_nft(sim, server, "list", "tables")
    assert sim.leftovers() == {}


def test_an_unknown_host_key_is_refused_and_nothing_is_made(
        sim: Simulation, tmp_path: Path) -> None:
    lab, _ = two_server_lab(sim, tmp_path)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    text = lab.read_text().replace(f'known_hosts = "{sim.known_hosts}"',
                                   f'known_hosts = "{empty}"', 1)  # only s1's
    lab.write_text(text)
    r = vm("up", str(lab))
    assert r.returncode == 7, r.stderr
    assert "server 's1'" in r.stderr and "cannot be reached" in r.stderr
    assert "Host key verification failed" in r.stderr
    for server in ("s1", "s2"):
        assert remote_json(sim, server, "list") == []
    assert sim.known_hosts.read_text().count("\n") == 2  # nothing was added anywhere


def test_a_failure_on_the_second_server_rolls_back_the_first(
        sim: Simulation, tmp_path: Path, tiny: TinyGuest) -> None:
    # b asks for a kernel that does not exist on s2: s1's part is up by then
    lab, n = two_server_lab(sim, tmp_path)
    text = lab.read_text()
    head, _, tail = text.partition(f"[machines.{n['b']}]")
    tail = tail.replace(f'kernel = "{tiny.kernel}"', 'kernel = "/nonexistent/vmlinuz"', 1)
    lab.write_text(head + f"[machines.{n['b']}]" + tail)
    r = vm("up", str(lab))
    assert r.returncode != 0
    assert "server 's2'" in r.stderr
    for server in ("s1", "s2"):
        assert remote_json(sim, server, "list") == []
        assert remote_json(sim, server, "net") == []
    assert sim.leftovers() == {}
    assert vm("down", str(lab)).returncode == 0


def test_a_machine_migrates_to_the_other_server_and_back_keeping_its_state(
        sim: Simulation, tmp_path: Path) -> None:
    from vmanager.lab import load
    # a's disk is on storage both servers see at the same path (one filesystem here)
    lab, n = two_server_lab(sim, tmp_path, disk_a=tmp_path / "a-data.qcow2")
    a, b = n["a"], n["b"]
    try:
        ok("up", str(lab), "--wait-ready")
        ok("exec", a, "--", "ip addr add 10.77.0.1/24 dev eth0 && ip link set eth0 up")
        ok("exec", b, "--", "ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up")
        ok("exec", a, "--", "echo kept-$((6*7)) > /tmp/mark")
        ok("exec", a, "--", "echo on-disk | dd of=/dev/vda bs=512 count=1 conv=fsync")
        # not said to be shared: the destination finds the disk's file there already
        # (the same file), and refuses rather than overwrite it
        refused = vm("migrate", str(lab), a, "--to", "s2")
        assert refused.returncode != 0, refused.stdout
        assert "exists on this server already" in refused.stderr
        assert "--shared-storage" in refused.stderr
        assert ok("exec", a, "--", "head -c 7 /dev/vda").strip() == "on-disk"
        mac = ok("exec", a, "--", "cat /sys/class/net/eth0/address").strip()
        boot_id = ok("exec", a, "--", "cat /proc/sys/kernel/random/boot_id").strip()
        report = json.loads(ok("--json", "migrate", str(lab), a, "--to", "s2",
                                  "--shared-storage"))
        assert (report["from"], report["to"]) == ("s1", "s2")
        assert report["total_ms"] > 0 and report["downtime_ms"] > 0
        assert report["transferred"] > 0
        # now on s2 beside b; nothing of it left on s1
        assert remote_json(sim, "s1", "list") == []
        assert sorted(m["name"] for m in remote_json(sim, "s2", "list")) == sorted([a, b])
        # the same running kernel (not a reboot), its RAM, its MAC and its address
        assert ok("exec", a, "--", "cat /tmp/mark").strip() == "kept-42"
        assert ok("exec", a, "--", "head -c 7 /dev/vda").strip() == "on-disk"
        ok("exec", a, "--", "echo written-on-s2 | dd of=/dev/vda bs=512 seek=1 conv=fsync")
        assert ok("exec", a, "--", "cat /proc/sys/kernel/random/boot_id").strip() == boot_id
        assert ok("exec", a, "--", "cat /sys/class/net/eth0/address").strip() == mac
        assert " 0% packet loss" in ok("exec", b, "--", "ping -c 2 -W 3 10.77.0.1")
        info = json.loads(ok("--json", "inspect", str(lab)))
        assert {m["name"]: m["server"] for m in info["machines"]} == {a: "s2", b: "s2"}
        assert json.loads(ok("--json", "up", str(lab)))["made"] == []  # follows the move
        # and back with the Python API; b (on s2) reaches it across the VXLAN again
        back = load(lab).migrate(a, to="s1", shared_storage=True)
        assert (back.source, back.target) == ("s2", "s1")
        assert back.total_ms > 0 and back.downtime_ms is not None and back.downtime_ms > 0
        assert [m["name"] for m in remote_json(sim, "s1", "list")] == [a]
        assert ok("exec", a, "--", "cat /tmp/mark").strip() == "kept-42"
        assert "written-on-s2" in ok("exec", a, "--", "dd if=/dev/vda bs=512 skip=1 count=1")
        assert " 0% packet loss" in ok("exec", b, "--", "ping -c 2 -W 3 10.77.0.1")
        print(f"\nmigration s1->s2: total {report['total_ms']} ms, downtime "
              f"{report['downtime_ms']} ms, wall {report['wall_s']} s; back: total "
              f"{back.total_ms} ms, downtime {back.downtime_ms} ms, wall {back.wall_s} s")
    finally:
        down = vm("--json", "down", str(lab))
    assert down.returncode == 0, down.stderr
    for server in ("s1", "s2"):
        assert remote_json(sim, server, "list") == []
        assert remote_json(sim, server, "net") == []
    assert sim.leftovers() == {}
