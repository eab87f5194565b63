"""Lab tools proven in guests: jumbo MTU, capture, impair (CLI), whole-lab checkpoints.

One lab of three tiny guests on a switch with MTU 9000 is shared by the module.
Traffic stays between the lab's own guests.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import lab as labs
from vmanager.net import Interface, VirtualNic, stable_mac
from vmanager.state.persist import attach, detach
from vmcli import ok, vm

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)


LAB = """
[lab]
name = "{lab}"

[switches.{sw}]
mtu = 9000

[machines.{a}]
guest = "tiny"
memory = 128
nics = [{{ switch = "{sw}", impair = {{ rate = "500mbit" }} }}]

[machines.{b}]
guest = "tiny"
memory = 128
nics = [{{ switch = "{sw}" }}]
disks = [{{ path = "{b}.qcow2", size = "16M" }}]

[machines.{c}]
guest = "tiny"
memory = 128

[[links]]
endpoints = ["{c}:0", "{sw}"]
"""


class Lab:
    def __init__(self, path: Path, names: dict[str, str]) -> None:
        self.path, self.names = path, names
        self.spec = labs.load(path)

    @property
    def machines(self) -> list[str]:
        return [self.names[k] for k in ("a", "b", "c")]

    def run(self, machine: str, command: str, timeout: float = 60) -> str:
        m = attach(machine, timeout=30)
        try:
            return m.succeed(command, timeout=timeout)
        finally:
            detach(m)


@pytest.fixture(scope="module")
def lab(tiny: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    t = secrets.token_hex(2)
    names = {"lab": f"t{t}", "sw": f"w{t}", "a": f"a{t}", "b": f"b{t}", "c": f"c{t}"}
    path = tmp_path_factory.mktemp("lab") / "tools.toml"
    path.write_text(LAB.format(**names))
    ok("up", str(path), "--wait-ready")
    try:
        out = Lab(path, names)
        for i, m in enumerate(out.machines, 1):
            out.run(m, f"ip link set eth0 up && ip addr add 10.93.0.{i}/24 dev eth0")
        yield out
    finally:
        vm("down", str(path))


def _snmp(lab: Lab, machine: str) -> dict[str, int]:
    text = lab.run(machine, "cat /proc/net/snmp")
    lines = [ln.split()[1:] for ln in text.splitlines() if ln.startswith("Ip:")]
    return dict(zip(lines[0], (int(v) for v in lines[1]), strict=True))


def test_jumbo_mtu_reaches_every_link_and_the_guests(lab: Lab) -> None:
    a, b, _c = lab.machines
    assert Interface(lab.names["sw"]).mtu == 9000
    for m in lab.machines:
        nic = VirtualNic(namespace=m, mac=stable_mac(m, 0), create=False)
        assert Interface(nic.port).mtu == 9000, m
        assert Interface(nic.sink, netns=m).mtu == 9000, m
        assert Interface(nic.device, netns=m).mtu == 9000, m
        assert lab.run(m, "cat /sys/class/net/eth0/mtu").strip() == "9000", m
    before_a, before_b = _snmp(lab, a), _snmp(lab, b)
    out = lab.run(a, "ping -c 3 -s 8000 -W 3 10.93.0.2", timeout=60)
    assert "3 packets received" in out, out
    after_a, after_b = _snmp(lab, a), _snmp(lab, b)
    # 8028-byte datagrams went whole: nothing was fragmented or reassembled
    assert after_a["FragCreates"] == before_a["FragCreates"], (before_a, after_a)
    assert after_b["ReasmReqds"] == before_b["ReasmReqds"], (before_b, after_b)


def test_capture_on_a_machine_nic_sees_the_guests_frames(lab: Lab, tmp_path: Path) -> None:
    a, _b, _c = lab.machines
    out = tmp_path / "a.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "vmanager.cli.main", "capture",
                             str(lab.path), f"{a}:0", "-w", str(out), "-c", "4", "-f", "icmp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(150):  # started once tcpdump wrote its file header
            if proc.poll() is not None or (out.exists() and out.stat().st_size >= 24):
                break
            time.sleep(0.1)
        # the running capture shows on the topology picture's edge
        for _ in range(50):  # the command notes its capture right after tcpdump starts
            graph = ok("graph", str(lab.path), "--dot")
            if "[capturing]" in graph:
                break
            time.sleep(0.2)
        assert "[capturing]" in graph and "#c0392b" in graph, graph
        lab.run(a, "ping -c 2 -s 3000 10.93.0.3")
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "4 frames captured" in err, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = subprocess.run(["tcpdump", "-n", "-r", str(out)], capture_output=True, text=True,
                          check=True).stdout
    lines = text.splitlines()
    assert len(lines) == 4, text  # the filter kept ARP and IPv6 router solicitations out
    assert sum("10.93.0.1 > 10.93.0.3: ICMP echo request" in ln and "length 3008" in ln
               for ln in lines) == 2, text
    assert sum("10.93.0.3 > 10.93.0.1: ICMP echo reply" in ln for ln in lines) == 2, text


def test_capture_streams_pcap_to_stdout(lab: Lab) -> None:
    a, _b, _c = lab.machines
    proc = subprocess.Popen([sys.executable, "-m", "vmanager.cli.main", "capture",
                             str(lab.path), lab.names["sw"], "-w", "-", "--duration", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lab.run(a, "ping -c 2 10.93.0.255 -b || true; arping -c 2 -I eth0 10.93.0.2 || true")
    data, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"), data[:32]
    assert b"frames captured" in err


def test_impair_cli_sets_shows_and_clears_a_rate(lab: Lab) -> None:
    a = lab.names["a"]
    shown = json.loads(ok("impair", str(lab.path), f"{a}:0", "--show", "--json"))
    assert shown["rate_bit"] == 500 * 10**6, shown  # from the lab file
    assert shown["direction"] == "egress"
    ok("impair", str(lab.path), f"{a}:0", "--rate", "2mbit")
    nic = VirtualNic(namespace=a, mac=stable_mac(a, 0), create=False)
    from vmanager.net import impair
    assert impair.read(nic.sink, a).rate_bit == 2 * 10**6
    assert "rate 2mbit" in ok("impair", str(lab.path), f"{a}:0", "--show")
    ok("impair", str(lab.path), f"{a}:0", "--clear")
    assert not impair.read(nic.sink, a)
    bad = vm("impair", str(lab.path), f"{a}:0", "--loss", "150%")
    assert bad.returncode == 6 and "loss" in bad.stderr, bad.stderr
    if not os.path.isdir("/sys/module/sch_netem"):
        missing = vm("impair", str(lab.path), f"{a}:0", "--delay", "100ms")
        assert missing.returncode == 7 and "sch_netem" in missing.stderr, missing.stderr
    wrong = vm("impair", str(lab.path), f"{a}:5", "--rate", "1mbit")
    assert wrong.returncode == 6 and "NICs 0 to 0" in wrong.stderr, wrong.stderr


def test_checkpoint_and_rollback_restore_every_machines_ram(lab: Lab) -> None:
    b = lab.names["b"]
    disk = "dd of=/dev/vda bs=512 seek=64 oflag=direct conv=notrunc,sync 2>/dev/null"
    read = "dd if=/dev/vda bs=512 skip=64 count=1 iflag=direct 2>/dev/null | head -c 12"
    for m in lab.machines:
        lab.run(m, f"echo before-{m} > /root/state")
    lab.run(b, f"printf disk-before | {disk}")
    made = json.loads(ok("checkpoint", str(lab.path), "c1", "--json"))
    assert made["machines"] == lab.machines and made["seconds"] > 0
    listed = json.loads(ok("checkpoints", str(lab.path), "--json"))
    assert [c["name"] for c in listed] == ["c1"]
    again = vm("checkpoint", str(lab.path), "c1")
    assert again.returncode == 6 and "already has a checkpoint" in again.stderr
    for m in lab.machines:
        lab.run(m, f"echo after-{m} > /root/state; touch /root/later")
    lab.run(b, f"printf disk-after_ | {disk}")
    assert lab.run(b, read).startswith("disk-after_")
    text = ok("rollback", str(lab.path), "c1")
    assert re.search(r"rolled back to c1 \(3 machines\) in [0-9.]+ s", text), text
    # the disk is back too (read past the page cache)
    assert lab.run(b, read).startswith("disk-before"), lab.run(b, read)
    for m in lab.machines:
        assert lab.run(m, "cat /root/state").strip() == f"before-{m}", m
        assert lab.run(m, "ls /root/later 2>/dev/null || echo gone").strip() == "gone", m
    # the network was left alone and works after the rollback
    assert "1 packets received" in lab.run(lab.names["a"], "ping -c 1 -W 3 10.93.0.2")
    missing = vm("rollback", str(lab.path), "nope")
    assert missing.returncode == 3 and "c1" in missing.stderr
    ok("checkpoint", str(lab.path), "c1", "--delete")
    assert json.loads(ok("checkpoints", str(lab.path), "--json")) == []
    for m in lab.machines:
        mm = attach(m)
        try:
            assert [s.name for s in mm.snapshots()] == []
        finally:
            detach(mm)


def test_lab_file_impair_and_mtu_are_validated_with_line_and_field(tmp_path: Path) -> Any:
    from vmanager.errors import LabFileError
    body = ('[lab]\nname = "x"\n[switches.sw]\nmtu = 9000\n[machines.a]\nguest = "tiny"\n'
            'nics = [{ switch = "sw", impair = { delay = "40ms", loss = "101%" } }]\n')
    with pytest.raises(LabFileError, match=r":7: machines\.a\.nics\.0\.impair\.loss: loss"):
        labs.parse(body, path=tmp_path / "x.toml")
    good = labs.parse(body.replace("101%", "1%"), path=tmp_path / "x.toml")
    nic = good.machines[0].nics[0]
    assert nic.impair.delay_us == 40000 and nic.impair.loss == 1.0 and nic.mtu == 9000
    with pytest.raises(LabFileError, match=r"switches\.sw\.mtu"):
        labs.parse(body.replace("mtu = 9000", "mtu = 70000"), path=tmp_path / "x.toml")
    linked = labs.parse('[lab]\nname = "x"\n[switches.sw]\n[machines.a]\nguest = "tiny"\n'
                        '[[links]]\nendpoints = ["a:0", "sw"]\nmtu = 4000\n'
                        'impair = { rate = "1mbit" }\n', path=tmp_path / "y.toml")
    assert linked.machines[0].nics[0].mtu == 4000
    assert linked.machines[0].nics[0].impair.rate_bit == 10**6


def test_down_ends_running_captures_first(lab: Lab, tmp_path: Path) -> None:
    from vmanager.lab import tools
    b = lab.names["b"]
    out = tmp_path / "long.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "vmanager.cli.main", "capture",
                             str(lab.path), f"{b}:0", "-w", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if f"{b}:0" in tools.active_captures(lab.names["lab"]):
                break
            time.sleep(0.1)
        # what down() does first: a running tcpdump would hold b's namespace
        assert tools.stop_captures(lab.names["lab"]) == [f"{b}:0"]
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "frames captured" in err, err
    assert out.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    assert tools.active_captures(lab.names["lab"]) == {}
