"""State of a diskless running guest: snapshots on the state disk, RAM, dumps, chardevs.

One tiny guest (no disk, no CD) is shared by the module; every effect is
checked inside it.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from vmanager import Machine
from vmanager.errors import ConfigError, HostError, NotFoundError
from vmanager.machine.state import DumpProgress

pytestmark = pytest.mark.guest


def _memtotal_kib(m: Machine) -> int:
    line = m.succeed("grep MemTotal /proc/meminfo")
    return int(line.split()[1])


def test_diskless_snapshot_uses_the_state_disk(shared_machine: Machine) -> None:
    m = shared_machine
    assert m.snapshots() == []
    assert not m.state_disk.exists()
    m.succeed("echo one > /tmp/marker")
    m.snapshot("one")
    assert m.state_disk.is_file()
    # The guest sees no new disk: the state disk is a block node without a device.
    assert m.succeed("ls /sys/block | grep -c '^vd' || true").strip() == "0"
    m.succeed("echo two > /tmp/marker")
    m.load_snapshot("one")
    assert m.succeed("cat /tmp/marker").strip() == "one"
    assert [s.name for s in m.snapshots()] == ["one"]
    m.delete_snapshot("one")
    assert m.snapshots() == []
    with pytest.raises(NotFoundError):
        m.load_snapshot("one")
    m.succeed("true")


def test_increase_ram_and_balloon(shared_machine: Machine) -> None:
    m = shared_machine
    before = _memtotal_kib(m)
    info = m.memory_info()
    assert (info.base, info.plugged) == (256, 0)
    info = m.increase_ram(128)
    assert (info.total, info.plugged) == (384, 128)
    m.wait_until_succeeds(f"test $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) "
                          f"-ge {before + 120 * 1024}", timeout=30)
    with pytest.raises(ConfigError, match="multiple of 128"):
        m.increase_ram(100)
    with pytest.raises(ConfigError, match="does not fit"):
        m.increase_ram(2048)
    grown = _memtotal_kib(m)
    info = m.balloon(256)
    assert info.balloon == 256
    assert _memtotal_kib(m) <= grown - 100 * 1024
    assert m.balloon(384).balloon == 384
    assert m.status() == "running"


def test_dump_memory_holds_the_guests_secret(shared_machine: Machine, tmp_path: Path) -> None:
    m = shared_machine
    secret = f"vmanager-secret-{secrets.token_hex(8)}"
    # Kept in a tmpfs file, so in guest RAM; the shell only sees it as two halves.
    m.succeed(f"a={secret[:12]}; b={secret[12:]}; echo $a$b > /tmp/secret")
    seen: list[DumpProgress] = []
    result = m.dump_memory(tmp_path / "core.elf", progress=seen.append)
    assert result.path == tmp_path / "core.elf"
    data = result.path.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert secret.encode() in data
    assert seen and seen[-1].fraction == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["core.elf"]
    m.succeed("true")


def test_dump_to_an_unwritable_path_is_a_clear_error(shared_machine: Machine,
                                                    tmp_path: Path) -> None:
    with pytest.raises(HostError, match="cannot write a memory dump"):
        shared_machine.dump_memory(tmp_path / "missing-dir" / "core.elf")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(HostError):
            shared_machine.dump_memory(locked / "core.elf")
    assert shared_machine.status() == "running"
    shared_machine.succeed("true")


def _port_dev(m: Machine, name: str) -> str:
    return m.wait_until_succeeds(
        f"for p in /sys/class/virtio-ports/*; do "
        f"[ \"$(cat $p/name 2>/dev/null)\" = {name} ] && echo /dev/${{p##*/}}; done "
        "| grep .", timeout=30).strip()


def test_chardev_socket_bytes_reach_the_guest(shared_machine: Machine) -> None:
    m = shared_machine
    ch = m.create_chardev("socket", port_name="org.vmanager.test0")
    assert ch.path is not None and ch.path.is_socket()
    dev = _port_dev(m, "org.vmanager.test0")
    with ch.connect() as sock:
        sock.sendall(b"hello-guest")
        # A port reads EOF until the host side is connected, so read only now.
        assert m.succeed(f"head -c 11 {dev}", timeout=30) == "hello-guest"
    assert ch in m.chardevs()
    m.remove_chardev(ch)
    assert m.chardevs() == []
    assert not ch.path.exists()
    m.wait_until_succeeds(f"test ! -e {dev}", timeout=30)


def test_chardev_file_gets_what_the_guest_writes(shared_machine: Machine,
                                                 tmp_path: Path) -> None:
    m = shared_machine
    out = tmp_path / "port.log"
    ch = m.create_chardev("file", path=out, port_name="org.vmanager.log")
    dev = _port_dev(m, "org.vmanager.log")
    m.succeed(f"echo from-the-guest > {dev}")
    deadline = time.monotonic() + 10
    while b"from-the-guest" not in out.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"from-the-guest\n" in out.read_bytes()
    m.remove_chardev(ch)


def test_chardev_pty_and_bad_options(shared_machine: Machine) -> None:
    m = shared_machine
    ch = m.create_chardev("pty")
    assert ch.path is not None and str(ch.path).startswith("/dev/pts/")
    m.remove_chardev(ch)
    with pytest.raises(ConfigError):
        m.create_chardev("serial")
    with pytest.raises(ConfigError):
        m.create_chardev("file")
    with pytest.raises(ConfigError):
        m.create_chardev("socket", port_name="bad name")
    assert m.chardevs() == []
