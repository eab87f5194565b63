"""A machine started (and changed) by one process is whole in another: Machine.attach(name).

A second Python process starts a tiny guest with a NIC, a qcow2 disk and a CD,
hot-plugs a NIC, a DIMM and a chardev port, takes a snapshot, opens VNC and
detaches. This process attaches and uses every feature, checking each effect in
the guest or over QMP, as it would on the object that started the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import CD, Harddrive, Machine, paths
from vmanager.errors import VmanagerError
from vmanager.net import adopt as net_adopt
from vmanager.net import list_namespaces, stable_mac
from vmtest_util import unique_name

pytestmark = pytest.mark.guest

STARTER = """
import json, sys
from vmanager import CD, Harddrive, Machine, paths
from vmanager.guests import tiny_guest
name, disk, iso = sys.argv[1:]
m = Machine(name, **tiny_guest().machine_args(name), memory=256, nics=1,
            harddrives=Harddrive(disk), cd=CD(iso))
m.start_vm()
try:
    m.wait_ready(120)
    nic = m.add_nic()
    m.increase_ram(128)
    ch = m.create_chardev("socket", port_name="org.vmanager.reattach")
    vnc = m.enable_vnc()
    # after the hot-plugs: a snapshot loads only into the devices it was taken with
    m.succeed("echo one > /tmp/marker")
    m.snapshot("before")
    out = {"nics": [n.name for n in m.nics], "ids": [m.nic_id(n) for n in m.nics],
           "macs": [n.mac for n in m.nics], "chardev": ch.id, "vnc": str(vnc), "pid": m.pid}
except BaseException:
    m.kill()
    raise
m.detach()
print(json.dumps(out))
"""


def _guest_ifname(m: Machine, mac: str) -> str:
    script = (f'for i in /sys/class/net/*; do [ "$(cat $i/address)" = "{mac}" ] && '
              'basename $i && exit 0; done; exit 1')
    return m.wait_until_succeeds(script, timeout=30).strip()


def _port_dev(m: Machine, name: str) -> str:
    return m.wait_until_succeeds(
        f"for p in /sys/class/virtio-ports/*; do "
        f"[ \"$(cat $p/name 2>/dev/null)\" = {name} ] && echo /dev/${{p##*/}}; done "
        "| grep .", timeout=30).strip()


def _memtotal_kib(m: Machine) -> int:
    return int(m.succeed("grep MemTotal /proc/meminfo").split()[1])


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, tiny: Any) -> Iterator[dict[str, Any]]:
    """The machine another process started and let go of, and what that process saw."""
    base = tmp_path_factory.mktemp("reattach")
    disk = Harddrive(base / "disk.qcow2", size="64M")
    disk.create()
    src = base / "iso"
    src.mkdir()
    (src / "hello.txt").write_text("hello from the ISO\n")
    iso = CD.from_directory(src, output=base / "cd.iso", volume_id="reattach")
    name = unique_name("ra")
    r = subprocess.run([sys.executable, "-c", STARTER, name, str(disk.path), str(iso.path)],
                       capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    info: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    info.update(name=name, disk=disk.path, iso=iso.path, base=base)
    yield info
    # whatever a test left: stop it from here, which must remove everything
    with contextlib.suppress(VmanagerError):  # the last test stopped it already
        Machine.attach(name, timeout=30).stop()


@pytest.fixture(scope="module")
def m(started: dict[str, Any]) -> Iterator[Machine]:
    machine = Machine.attach(started["name"], timeout=30)
    yield machine
    if machine.state.value in ("running", "paused"):
        machine.detach()


def test_the_attached_machine_knows_its_nics_disk_cd_and_devices(
        m: Machine, started: dict[str, Any]) -> None:
    assert m.pid == started["pid"]
    assert [n.name for n in m.nics] == started["nics"]
    assert [m.nic_id(n) for n in m.nics] == started["ids"] == ["nic0", "nic1"]
    assert [n.mac for n in m.nics] == started["macs"]
    assert m.cd is not None and m.cd.path == started["iso"]
    assert [d.path for d in m.harddrives] == [started["disk"]]
    assert m.harddrives[0].in_use  # offline changes are refused while it runs
    assert [c.id for c in m.chardevs()] == [started["chardev"]]
    assert m.vnc_socket == Path(started["vnc"]) and m.vnc_socket.is_socket()


def test_snapshots_of_the_other_process_load_here(m: Machine) -> None:
    assert [s.name for s in m.snapshots()] == ["before"]
    assert [s.name for s in m.harddrives[0].snapshots] == ["before"]  # asked over QMP
    m.succeed("echo two > /tmp/marker")
    m.load_snapshot("before")
    assert m.succeed("cat /tmp/marker").strip() == "one"
    m.snapshot("after")
    assert [s.name for s in m.snapshots()] == ["before", "after"]
    m.delete_snapshot("after")


@pytest.mark.allow_leaks  # the NIC stays plugged; the last test stops it and checks
def test_add_nic_takes_an_id_qemu_has_not_seen(m: Machine) -> None:
    nic = m.add_nic()
    # nic1 was hot-plugged by the other process: the new NIC gets the next id and MAC
    assert m.nic_id(nic) == "nic2" and nic.mac == stable_mac(m.name, 2)
    ifname = _guest_ifname(m, nic.mac)
    peripherals = {p["name"] for p in m.qmp("qom-list", {"path": "/machine/peripheral"})}
    assert {"nic0", "nic1", "nic2"} <= peripherals
    assert ifname in m.succeed("ls /sys/class/net")


def test_nic_state_and_del_nic_on_a_nic_hot_plugged_elsewhere(
        m: Machine, started: dict[str, Any]) -> None:
    plugged = m.nics[1]
    ifname = _guest_ifname(m, plugged.mac)
    m.succeed(f"ip link set {ifname} up")  # carrier is readable on an up link only
    m.wait_until_succeeds(f"[ $(cat /sys/class/net/{ifname}/carrier) = 1 ]", timeout=10)
    m.nic_state(1, False)
    m.wait_until_succeeds(f"[ $(cat /sys/class/net/{ifname}/carrier) = 0 ]", timeout=10)
    m.nic_state("nic1", True)
    m.wait_until_succeeds(f"[ $(cat /sys/class/net/{ifname}/carrier) = 1 ]", timeout=10)
    m.del_nic(plugged)
    assert m.succeed(f"ls /sys/class/net/{ifname} 2>/dev/null || echo gone").strip() == "gone"
    # the machine made that NIC: unplugging it here removed its links on the host
    assert not net_adopt.link_exists(plugged.port)
    assert [m.nic_id(n) for n in m.nics] == ["nic0", "nic2"]


def test_eject_finds_the_cd_and_change_cd_works(m: Machine, started: dict[str, Any]) -> None:
    m.succeed("mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd")
    assert "hello from the ISO" in m.succeed("cat /mnt/cd/hello.txt")
    m.succeed("umount /mnt/cd")
    m.eject()
    assert m.cd is None
    m.fail("dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>&1")
    m.change_cd(CD(started["iso"]))
    m.wait_until_succeeds("mount -t iso9660 -o ro /dev/sr0 /mnt/cd", timeout=30)
    try:
        assert "hello from the ISO" in m.succeed("cat /mnt/cd/hello.txt")
    finally:
        m.execute("umount /mnt/cd")


def test_increase_ram_takes_a_new_dimm_id_and_balloon_works(m: Machine) -> None:
    before = _memtotal_kib(m)
    assert m.memory_info().plugged == 128
    info = m.increase_ram(128)
    assert info.plugged == 256
    ids = [d["data"]["id"] for d in m.qmp("query-memory-devices") if d["type"] == "dimm"]
    assert ids == ["dimm-hp1", "dimm-hp2"]
    m.wait_until_succeeds(f"test $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) "
                          f"-ge {before + 120 * 1024}", timeout=30)
    assert m.balloon(400).balloon == 400


def test_chardev_made_elsewhere_carries_bytes_and_is_removed_here(m: Machine) -> None:
    (ch,) = m.chardevs()
    dev = _port_dev(m, "org.vmanager.reattach")
    with ch.connect() as sock:
        sock.sendall(b"hello-reattached")
        assert m.wait_until_succeeds(f"head -c 16 {dev}", timeout=10) == "hello-reattached"
    ours = m.create_chardev("socket")
    assert ours.id != ch.id  # never an id QEMU already has
    m.remove_chardev(ch)
    m.remove_chardev(ours)
    assert m.chardevs() == []
    m.wait_until_succeeds(f"test ! -e {dev}", timeout=30)


def test_screen_vnc_resize_and_saved_state(m: Machine, started: dict[str, Any]) -> None:
    shot = m.screenshot(started["base"] / "screen.png")
    assert shot.width > 0 and shot.path.is_file()
    m.disable_vnc()
    assert m.vnc_socket is None
    assert m.resize_harddrive(0, "96M") == 96 << 20
    assert m.succeed("cat /sys/block/vda/size").strip() == str((96 << 20) // 512)
    result = m.save_state(started["base"] / "state.bin", keep_running=True)
    assert result.transferred > 0 and (started["base"] / "state.bin").stat().st_size > 0
    assert m.succeed("echo alive").strip() == "alive"


def test_what_changed_here_survives_another_attach_and_stop_removes_everything(
        m: Machine, started: dict[str, Any]) -> None:
    name = started["name"]
    ports = [n.port for n in m.nics]
    m.detach()
    again = Machine.attach(name, timeout=30)
    assert [again.nic_id(n) for n in again.nics] == ["nic0", "nic2"]
    assert [n.port for n in again.nics] == ports
    assert again.cd is not None  # change_cd above was recorded
    assert again.memory_info().plugged == 256
    pid = again.pid
    assert pid is not None
    again.stop()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            break  # not our child: init reaps it
        time.sleep(0.1)
    assert name not in list_namespaces()
    for port in ports:
        assert not net_adopt.link_exists(port)
    for directory in (paths.run_dir() / "net", Path("/dev/vmanager")):
        assert not list(directory.glob(f"{name}.*"))  # macvtap device nodes
