"""Live state of a running guest: whole-machine snapshots, online resize, CD media.

Every effect is checked inside the guest through its backdoor shell.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmanager import CD, Machine
from vmanager.errors import NotFoundError, StateError, StorageError

pytestmark = pytest.mark.guest

DISK_MARK = "dd if=/dev/vda bs=16 count=1 2>/dev/null"


def _write_disk(m: Machine, text: str) -> None:
    m.succeed(f"printf '%-16s' {text} | dd of=/dev/vda bs=16 count=1 conv=fsync 2>/dev/null")


def _read_disk(m: Machine) -> str:
    # Drop the page cache so the read comes from the (restored) disk, not from RAM.
    m.succeed("sync; echo 3 > /proc/sys/vm/drop_caches")
    return m.succeed(DISK_MARK).strip()


def test_snapshot_restores_disk_and_ram(rich: Machine) -> None:
    _write_disk(rich, "disk-before")
    rich.succeed("echo ram-before > /tmp/marker")
    snap = rich.snapshot("before")
    assert snap.name == "before" and snap.vm_state_size > 0
    assert [s.name for s in rich.snapshots()] == ["before"]
    # The disk carries the snapshot too (Harddrive asks the running machine).
    assert [s.name for s in rich.harddrives[0].snapshots] == ["before"]

    _write_disk(rich, "disk-after")
    rich.succeed("echo ram-after > /tmp/marker")
    assert _read_disk(rich) == "disk-after"

    rich.load_snapshot("before")
    assert rich.succeed("cat /tmp/marker").strip() == "ram-before"
    assert _read_disk(rich) == "disk-before"
    assert rich.status() == "running"

    with pytest.raises(StorageError, match="already has a snapshot"):
        rich.snapshot("before")
    rich.delete_snapshot("before")
    assert rich.snapshots() == []
    assert rich.harddrives[0].snapshots == []


def test_missing_snapshot_is_a_clear_error(rich: Machine) -> None:
    rich.snapshot("kept")
    try:
        with pytest.raises(NotFoundError, match=r"no snapshot 'nope' \(snapshots: 'kept'\)"):
            rich.load_snapshot("nope")
        with pytest.raises(NotFoundError):
            rich.delete_snapshot("nope")
        assert rich.status() == "running"
        rich.succeed("true")
    finally:
        rich.delete_snapshot("kept")


def test_online_resize_is_seen_by_the_guest(rich: Machine) -> None:
    assert rich.succeed("blockdev --getsize64 /dev/vda").strip() == str(64 << 20)
    assert rich.resize_harddrive(rich.harddrives[0], "96M") == 96 << 20
    rich.wait_until_succeeds(f"test $(blockdev --getsize64 /dev/vda) = {96 << 20}", timeout=30)
    with pytest.raises(StorageError, match="refusing to shrink"):
        rich.resize_harddrive(0, "32M")
    assert rich.succeed("blockdev --getsize64 /dev/vda").strip() == str(96 << 20)
    assert rich.status() == "running"


def test_eject_and_change_medium(rich: Machine, media: Path) -> None:
    rich.succeed("mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd")
    assert "first ISO" in rich.succeed("cat /mnt/cd/first.txt")
    rich.succeed("umount /mnt/cd")

    rich.eject()
    assert rich.cd is None
    out = rich.fail("dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>&1")
    assert "medium" in out.lower() or out == ""
    with pytest.raises(StateError, match="no CD"):
        rich.eject()
    rich.succeed("true")

    second = CD(media / "second.iso")
    rich.change_cd(second)
    assert rich.cd is second
    rich.wait_until_succeeds("mount -t iso9660 -o ro /dev/sr0 /mnt/cd", timeout=30)
    try:
        assert "second ISO" in rich.succeed("cat /mnt/cd/second.txt")
        rich.fail("test -e /mnt/cd/first.txt")
    finally:
        rich.execute("umount /mnt/cd")
