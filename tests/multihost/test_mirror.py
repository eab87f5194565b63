"""Live migration between servers that share no storage: the disk moves with the guest.

Each simulated server sees its own directory at ``sim.storage`` (a bind mount
in its mount namespace), so the lab's disk path names a different file on each
server. The guest writes onto its disk before and during the migration; after
it, the guest reads everything back from the destination's own file, the
source's file is gone, and failures leave nothing on the destination.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from _simlab import VMANAGER, remote_json, server, two_server_lab

from vmanager.multihost import Simulation
from vmcli import ok, vm
from vmtest_util import unique_name

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("simulated servers need root (namespaces, sshd)", allow_module_level=True)
if not Path("/usr/sbin/sshd").exists():
    pytest.skip("needs Debian's openssh-server (scripts/setup installs it)",
                allow_module_level=True)

MIB = 1 << 20
# the guest's writer: the disk first (fsync'd), then the count it reached
WRITER = ("i=0; while true; do i=$((i+1)); echo c$i | dd of=/dev/vda bs=512 seek=2 "
          "conv=fsync 2>/dev/null; echo $i > /tmp/count; done")


def guest(machine: str, command: str) -> str:
    return ok("exec", machine, "--", command).strip()


def disk_read(machine: str, skip: int, count: int = 1, dev: str = "vda") -> str:
    """Sectors as the guest reads them from the disk itself (its cache dropped)."""
    return guest(machine, f"sync; echo 3 > /proc/sys/vm/drop_caches; "
                          f"dd if=/dev/{dev} bs=512 skip={skip} count={count} 2>/dev/null")


def raw_sectors(image: Path, tmp: Path, *sectors: int) -> list[bytes]:
    """Sectors of a qcow2 image, read on this host (qemu-img converts it to raw)."""
    out = tmp / "raw.img"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(out)],
                   check=True, capture_output=True, timeout=60)
    with out.open("rb") as f:
        found = []
        for sector in sectors:
            f.seek(sector * 512)
            found.append(f.read(512))
    out.unlink()
    return found


def test_a_disk_moves_with_the_guest_to_a_server_without_shared_storage(
        sim: Simulation, tmp_path: Path) -> None:
    from vmanager.lab import load
    s1, s2 = server(sim, "s1"), server(sim, "s2")
    image = f"d{unique_name('')}.qcow2"
    lab, n = two_server_lab(sim, tmp_path, disk_a=sim.storage / image)
    a = n["a"]
    try:
        ok("up", str(lab), "--wait-ready")
        # the disk is s1's own file: s2 (and this host) have none at that path
        assert (s1.storage / image).is_file()
        assert not (s2.storage / image).exists() and not (sim.storage / image).exists()
        guest(a, "echo marker-$((6*7)) | dd of=/dev/vda bs=512 conv=fsync 2>/dev/null")
        guest(a, "dd if=/dev/urandom of=/dev/vda bs=1M seek=4 count=8 conv=fsync "
                 "2>/dev/null; dd if=/dev/vda bs=1M skip=4 count=8 2>/dev/null | md5sum "
                 "> /tmp/sum")
        checksum = guest(a, "cat /tmp/sum").split()[0]
        guest(a, f"({WRITER}) </dev/null >/dev/null 2>&1 & echo $! > /tmp/writer")
        before = int(guest(a, "sleep 1; cat /tmp/count"))
        assert before > 0
        boot_id = guest(a, "cat /proc/sys/kernel/random/boot_id")

        r = vm("--json", "migrate", str(lab), a, "--to", "s2")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert (report["from"], report["to"]) == ("s1", "s2")
        assert [d["node"] for d in report["disks"]] == ["disk0"]
        assert report["disks"][0]["size"] == 32 * MIB
        assert report["downtime_ms"] is not None and report["downtime_ms"] > 0

        # the same running guest (its RAM: the writer's pid, the boot id) now on s2
        assert guest(a, "cat /proc/sys/kernel/random/boot_id") == boot_id
        pid = guest(a, "cat /tmp/writer")
        after = int(guest(a, "sleep 1; cat /tmp/count"))
        assert after > before  # it kept writing through the move, and writes on s2
        guest(a, f"kill {pid}; sleep 0.5")
        last = int(guest(a, "cat /tmp/count"))
        # everything it wrote is on the destination's disk, read past the guest's cache
        assert disk_read(a, 0).startswith("marker-42")
        assert re.match(rf"c({last}|{last + 1})\b", disk_read(a, 2)), disk_read(a, 2)
        assert guest(a, "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=1M "
                        "skip=4 count=8 2>/dev/null | md5sum").split()[0] == checksum
        # ... which is s2's own file; s1's is gone, and nothing of a is left on s1
        assert (s2.storage / image).is_file()
        assert not (s1.storage / image).exists()
        assert remote_json(sim, "s1", "list") == []
        assert not (s1.run_dir / "machines" / a).exists()
        assert sim.leftovers().get("s1") is None
        guest(a, "echo written-on-s2 | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null")

        # and back with the Python API: the disk moves again
        lines: list[str] = []
        back = load(lab).migrate(a, to="s1", progress=lines.append)
        assert (back.source, back.target) == ("s2", "s1")
        assert back.disks and back.mirror_s > 0
        assert any("in step" in line for line in lines), lines
        assert (s1.storage / image).is_file() and not (s2.storage / image).exists()
        assert disk_read(a, 1).startswith("written-on-s2")
        assert disk_read(a, 0).startswith("marker-42")
        assert [m["name"] for m in remote_json(sim, "s1", "list")] == [a]
        print(f"\nmirrored migration s1->s2: total {report['total_ms']} ms, downtime "
              f"{report['downtime_ms']} ms, disks in step after {report['mirror_s']} s, "
              f"wall {report['wall_s']} s; back: total {back.total_ms} ms, downtime "
              f"{back.downtime_ms} ms, wall {back.wall_s} s")
    finally:
        down = vm("--json", "down", str(lab))
    assert down.returncode == 0, down.stderr
    # the data is in s1's file itself, read here once QEMU is gone
    first, second = raw_sectors(s1.storage / image, tmp_path, 0, 1)
    assert first.startswith(b"marker-42") and second.startswith(b"written-on-s2")
    for s in (s1, s2):
        assert remote_json(sim, s.name, "list") == []
        (s.storage / image).unlink(missing_ok=True)
    assert sim.leftovers() == {}


def test_a_destination_that_cannot_take_a_disk_leaves_nothing_then_two_disks_move(
        sim: Simulation, tmp_path: Path) -> None:
    s1, s2 = server(sim, "s1"), server(sim, "s2")
    sub = f"sub{unique_name('')}"
    (s1.storage / sub).mkdir()
    # disk0 (raw) can always be made on s2; disk1 (qcow2) only once its directory exists
    first, second = sim.storage / f"{sub}-0.img", sim.storage / sub / "a.qcow2"
    lab, n = two_server_lab(sim, tmp_path, disks_a=(
        f'{{ path = "{first}", size = "8M", format = "raw" }}, '
        f'{{ path = "{second}", size = "16M" }}'))
    a = n["a"]
    try:
        ok("up", str(lab), "--wait-ready")
        guest(a, "echo still-here | dd of=/dev/vda bs=512 conv=fsync 2>/dev/null; "
                 "echo second-disk | dd of=/dev/vdb bs=512 conv=fsync 2>/dev/null")
        # 1. s2 has no such directory: it cannot create disk1, and removes disk0 again
        r = vm("migrate", str(lab), a, "--to", "s2")
        assert r.returncode != 0
        assert "destination server 's2'" in r.stderr and "disk1" in r.stderr
        assert f"directory {sim.storage / sub} does not exist" in r.stderr
        assert "keeps running on its source" in r.stderr
        assert not (s2.storage / first.name).exists()
        # 2. a file is there already (shared storage not declared, or somebody's):
        #    refused, and the file is left exactly as it was
        (s2.storage / sub).mkdir()
        foreign = s2.storage / sub / "a.qcow2"
        foreign.write_bytes(b"not vmanager's")
        r = vm("migrate", str(lab), a, "--to", "s2")
        assert r.returncode != 0
        assert "exists on this server already" in r.stderr and "--shared-storage" in r.stderr
        assert foreign.read_bytes() == b"not vmanager's"
        assert not (s2.storage / first.name).exists()
        # the guest runs on s1, on its own disks; nothing of it reached s2
        assert disk_read(a, 0).startswith("still-here")
        assert [m["name"] for m in remote_json(sim, "s1", "list")] == [a]
        assert [m["name"] for m in remote_json(sim, "s2", "list")] == [n["b"]]
        assert not (s2.run_dir / "machines" / a).exists()
        assert sorted(p.name for p in (s2.storage / sub).iterdir()) == ["a.qcow2"]
        assert not any(a in p for p in sim.leftovers().get("s2", []))  # b's QEMU only
        info = json.loads(ok("--json", "inspect", str(lab)))
        assert {m["name"]: m["server"] for m in info["machines"]}[a] == "s1"
        # 3. with the way clear, both disks (raw and qcow2) move
        foreign.unlink()
        report = json.loads(ok("--json", "migrate", str(lab), a, "--to", "s2"))
        assert [(d["node"], d["size"]) for d in report["disks"]] == [("disk0", 8 * MIB),
                                                                    ("disk1", 16 * MIB)]
        assert disk_read(a, 0).startswith("still-here")
        assert disk_read(a, 0, dev="vdb").startswith("second-disk")
        assert (s2.storage / first.name).is_file() and (s2.storage / sub / "a.qcow2").is_file()
        assert not (s1.storage / first.name).exists()
        assert not (s1.storage / sub / "a.qcow2").exists()
    finally:
        down = vm("--json", "down", str(lab))
    assert down.returncode == 0, down.stderr
    for s in (s1, s2):
        assert remote_json(sim, s.name, "list") == []
        for p in sorted((s.storage / sub).glob("*")):
            p.unlink()
        (s.storage / sub).rmdir()
        (s.storage / first.name).unlink(missing_ok=True)
    assert sim.leftovers() == {}


def _qemu_of(run_dir: Path) -> int | None:
    """The QEMU whose argv names ``run_dir`` (a machine's run directory on one server)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qemu-system" in argv[0] and any(str(run_dir).encode() in a for a in argv):
            return int(entry)
    return None


def test_a_destination_that_dies_during_the_disk_copy_leaves_the_guest_on_its_own_disk(
        sim: Simulation, tmp_path: Path) -> None:
    s1, s2 = server(sim, "s1"), server(sim, "s2")
    image = f"k{unique_name('')}.qcow2"
    lab, n = two_server_lab(sim, tmp_path, disk_a=sim.storage / image, disk_size="320M")
    a = n["a"]
    try:
        ok("up", str(lab), "--wait-ready")
        # enough data that the copy takes a while: the destination dies in the middle
        guest(a, "dd if=/dev/urandom of=/dev/vda bs=1M count=256 conv=fsync 2>/dev/null; "
                 "dd if=/dev/vda bs=1M count=256 2>/dev/null | md5sum > /tmp/sum")
        checksum = guest(a, "cat /tmp/sum").split()[0]
        migrate = subprocess.Popen([*VMANAGER.split(), "migrate", str(lab), a, "--to", "s2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = None
        target = s2.storage / image
        try:
            for _ in range(1200):
                pid = _qemu_of(s2.run_dir / "machines" / a)
                if pid is not None and target.exists() and target.stat().st_size > 16 * MIB:
                    os.kill(pid, 9)  # the destination's QEMU, mid-copy
                    killed = pid
                    break
                if migrate.poll() is not None:
                    break
                time.sleep(0.05)
            _, err = migrate.communicate(timeout=300)
        finally:
            if migrate.poll() is None:
                migrate.kill()
                migrate.wait()
        assert killed is not None, f"the copy ended before it could be interrupted: {err}"
        assert migrate.returncode != 0
        assert "destination server 's2'" in err and "keeps running on its source" in err
        assert f"mirroring disk {sim.storage / image} (disk0)" in err, err  # the source's word
        print(f"\ninterrupted copy: {err.strip()[-600:]}")
        # the guest runs on s1 on its own, unchanged disk; nothing of it is left on s2
        assert guest(a, "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=1M "
                        "count=256 2>/dev/null | md5sum").split()[0] == checksum
        assert [m["name"] for m in remote_json(sim, "s1", "list")] == [a]
        assert [m["name"] for m in remote_json(sim, "s2", "list")] == [n["b"]]
        assert not target.exists() and (s1.storage / image).is_file()
        assert _qemu_of(s2.run_dir / "machines" / a) is None
        assert not (s2.run_dir / "machines" / a).exists()
        assert not any(a in p for p in sim.leftovers().get("s2", []))
        assert not list((s1.run_dir / "machines" / a).glob("nbd-*"))  # no relay socket left
        # nothing stands in the way of the next attempt
        report = json.loads(ok("--json", "migrate", str(lab), a, "--to", "s2"))
        assert report["to"] == "s2" and target.is_file()
        assert guest(a, "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=1M "
                        "count=256 2>/dev/null | md5sum").split()[0] == checksum
    finally:
        down = vm("--json", "down", str(lab))
    assert down.returncode == 0, down.stderr
    for s in (s1, s2):
        assert remote_json(sim, s.name, "list") == []
        (s.storage / image).unlink(missing_ok=True)
    assert sim.leftovers() == {}
