"""Real qemu-img on real images in tmp_path: create, info, resize, snapshots, wipe, overlays,
and the backing-chain checks."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from storage_helpers import MiB, drop_backing_format, needs_qemu_img, qemu_img, read_content
from storage_helpers import write_pattern as write

from vmanager.errors import ConfigError, NotFoundError, StateError, StorageError
from vmanager.storage import BackingEscapeError, Harddrive, SnapshotInfo

pytestmark = needs_qemu_img

KiB64 = 64 * 1024


def made(path: Path, size: str = "4M", **kwargs: object) -> Harddrive:
    hd = Harddrive(path, **kwargs)  # type: ignore[arg-type]
    hd.create(size)
    return hd


# -- create / info -------------------------------------------------------------------

def test_create_and_info(tmp_path: Path) -> None:
    hd = Harddrive(tmp_path / "a.qcow2", size="8M")
    assert not hd.exists
    info = hd.create()
    assert hd.exists
    assert (info.format, info.virtual_size) == ("qcow2", 8 * MiB)
    assert info.backing_file is None and info.backing_chain == () and info.snapshots == ()
    assert hd.info() == info
    assert hd.snapshots == []
    assert (tmp_path / "a.qcow2").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.qcow2"]  # no temp file left


def test_raw_image(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.raw", "2M", format="raw")
    assert hd.info().format == "raw"
    assert (tmp_path / "a.raw").stat().st_size == 2 * MiB
    assert hd.snapshots == []
    with pytest.raises(StorageError, match="qcow2"):
        hd.create_snapshot("s")


def test_create_refuses_existing_file(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2")
    write(hd.path, 0x11)
    with pytest.raises(StorageError, match="already exists"):
        hd.create("4M")
    assert read_content(hd.path, tmp_path)[:4] == b"\x11" * 4
    assert hd.create("6M", overwrite=True).virtual_size == 6 * MiB
    assert read_content(hd.path, tmp_path) == bytes(6 * MiB)


def test_create_needs_a_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a size"):
        Harddrive(tmp_path / "a.qcow2").create()
    assert not (tmp_path / "a.qcow2").exists()


def test_missing_image_and_directory(tmp_path: Path) -> None:
    hd = Harddrive(tmp_path / "nope.qcow2")
    for call in (hd.info, lambda: hd.snapshots, lambda: hd.resize("1G"),
                 lambda: hd.create_snapshot("s"), lambda: hd.qemu_args(0)):
        with pytest.raises(NotFoundError, match=r"nope\.qcow2"):
            call()
    with pytest.raises(NotFoundError, match="no-such-dir"):
        Harddrive(tmp_path / "no-such-dir" / "a.qcow2").create("1M")


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a regular file"):
        Harddrive(tmp_path).info()


def test_format_is_never_probed(tmp_path: Path) -> None:
    # A qcow2 file opened as "raw" is read as raw bytes: its header (and any backing
    # file it names) means nothing.
    made(tmp_path / "a.qcow2")
    info = Harddrive(tmp_path / "a.qcow2", format="raw").info()
    assert info.format == "raw" and info.backing_file is None


# -- resize --------------------------------------------------------------------------

def test_resize_grow_and_shrink(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2", "4M")
    write(hd.path, 0x5A)
    assert hd.resize("8M").virtual_size == 8 * MiB
    assert hd.resize(8 * MiB).virtual_size == 8 * MiB  # no change, no error
    with pytest.raises(StorageError, match="shrink=True"):
        hd.resize("2M")
    assert hd.info().virtual_size == 8 * MiB
    assert hd.resize("2M", shrink=True).virtual_size == 2 * MiB
    assert read_content(hd.path, tmp_path)[:KiB64] == b"\x5a" * KiB64


def test_resize_with_snapshots(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2", "4M")
    hd.create_snapshot("before")
    assert hd.resize("6M").virtual_size == 6 * MiB
    assert [s.name for s in hd.snapshots] == ["before"]


@pytest.mark.parametrize("size", ["", "ten", "1Q", 0, -1])
def test_resize_bad_size(tmp_path: Path, size: object) -> None:
    hd = made(tmp_path / "a.qcow2")
    with pytest.raises(ConfigError):
        hd.resize(size)  # type: ignore[arg-type]


# -- offline snapshots -----------------------------------------------------------------

def test_snapshot_round_trip_restores_content(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2", "4M")
    write(hd.path, 0xAA)
    snap = hd.create_snapshot("clean")
    assert isinstance(snap, SnapshotInfo)
    assert (snap.name, snap.vm_state_size) == ("clean", 0)
    write(hd.path, 0xBB)
    write(hd.path, 0xCC, offset=2 * MiB)
    content = read_content(hd.path, tmp_path)
    assert content[:KiB64] == b"\xbb" * KiB64

    hd.apply_snapshot("clean")
    content = read_content(hd.path, tmp_path)
    assert content[:KiB64] == b"\xaa" * KiB64
    assert content[2 * MiB:2 * MiB + KiB64] == bytes(KiB64)  # written after: gone
    assert [s.name for s in hd.snapshots] == ["clean"]

    hd.delete_snapshot("clean")
    assert hd.snapshots == []
    assert read_content(hd.path, tmp_path)[:KiB64] == b"\xaa" * KiB64  # content stays


def test_snapshot_errors(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2")
    hd.create_snapshot("one")
    with pytest.raises(StorageError, match="already has a snapshot"):
        hd.create_snapshot("one")
    with pytest.raises(NotFoundError, match=r"'two'.*'one'"):
        hd.apply_snapshot("two")
    with pytest.raises(NotFoundError, match="two"):
        hd.delete_snapshot("two")
    for bad in ("", "a b", "../x", "-c", "1", "x" * 200):
        with pytest.raises(ConfigError):
            hd.create_snapshot(bad)
    assert [s.name for s in hd.snapshots] == ["one"]


def test_several_snapshots(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2")
    for n, pattern in enumerate((0x01, 0x02, 0x03)):
        write(hd.path, pattern)
        hd.create_snapshot(f"s{n}")
    assert [s.name for s in hd.snapshots] == ["s0", "s1", "s2"]
    assert len({s.id for s in hd.snapshots}) == 3
    hd.apply_snapshot("s1")
    assert read_content(hd.path, tmp_path)[:4] == b"\x02" * 4
    hd.apply_snapshot("s0")
    assert read_content(hd.path, tmp_path)[:4] == b"\x01" * 4


# -- wipe ----------------------------------------------------------------------------

def test_wipe_snapshots_only_keeps_content(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2")
    write(hd.path, 0x42)
    hd.create_snapshot("a")
    hd.create_snapshot("b")
    # qemu-img itself allows duplicate names; wipe must clear those too
    qemu_img("snapshot", "-c", "b", str(hd.path))
    assert len(hd.snapshots) == 3
    info = hd.wipe(snapshots_only=True)
    assert info.snapshots == () and hd.snapshots == []
    assert read_content(hd.path, tmp_path)[:KiB64] == b"\x42" * KiB64


def test_wipe_recreates_empty(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2", "6M")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(hd.path), "6M")
    hd.path.chmod(0o640)
    write(hd.path, 0x42)
    hd.create_snapshot("a")
    info = hd.wipe()
    assert info.virtual_size == 6 * MiB and info.snapshots == ()
    assert info.cluster_size == 4096
    assert hd.path.stat().st_mode & 0o777 == 0o640
    assert read_content(hd.path, tmp_path) == bytes(6 * MiB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qcow2"]


# -- overlays ------------------------------------------------------------------------

def test_overlay(tmp_path: Path) -> None:
    base = made(tmp_path / "base.qcow2", "4M")
    write(base.path, 0x77)
    top = Harddrive(tmp_path / "top.qcow2", backing=base)
    info = top.create()
    assert info.virtual_size == 4 * MiB
    assert info.backing_format == "qcow2"
    assert [b.filename for b in info.backing_chain] == [str(base.path)]
    assert read_content(top.path, tmp_path)[:KiB64] == b"\x77" * KiB64

    write(top.path, 0x88)
    assert read_content(top.path, tmp_path)[:KiB64] == b"\x88" * KiB64
    assert read_content(base.path, tmp_path)[:KiB64] == b"\x77" * KiB64  # base untouched

    top.create_snapshot("s")
    write(top.path, 0x99)
    top.apply_snapshot("s")
    assert read_content(top.path, tmp_path)[:KiB64] == b"\x88" * KiB64
    info = top.wipe()
    assert info.backing_chain[0].filename == str(base.path) and info.snapshots == ()
    assert read_content(top.path, tmp_path)[:KiB64] == b"\x77" * KiB64  # base shows again


def test_wipe_keeps_a_relative_backing_name(tmp_path: Path) -> None:
    made(tmp_path / "base.qcow2", "2M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
             str(tmp_path / "top.qcow2"))
    top = Harddrive(tmp_path / "top.qcow2")
    assert top.info().backing_file == "base.qcow2"
    assert top.wipe().backing_file == "base.qcow2"


def test_overlay_on_a_path_in_another_directory(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "vms").mkdir()
    made(tmp_path / "images" / "base.raw", "2M", format="raw")
    top = Harddrive(tmp_path / "vms" / "top.qcow2", backing=tmp_path / "images" / "base.raw")
    info = top.create("3M")
    assert info.virtual_size == 3 * MiB
    assert (info.backing_format, info.backing_chain[0].format) == ("raw", "raw")
    # Reopened without naming the backing dir, the chain leaves vms/: refused.
    with pytest.raises(BackingEscapeError, match="outside the allowed"):
        Harddrive(tmp_path / "vms" / "top.qcow2").info()
    again = Harddrive(tmp_path / "vms" / "top.qcow2", allowed_dirs=[tmp_path / "images"])
    assert again.info().backing_chain[0].filename == str(tmp_path / "images" / "base.raw")


def test_overlay_chain_of_three(tmp_path: Path) -> None:
    a = made(tmp_path / "a.qcow2", "2M")
    b = Harddrive(tmp_path / "b.qcow2", backing=a)
    b.create()
    c = Harddrive(tmp_path / "c.qcow2", backing=b)
    info = c.create()
    assert [x.filename for x in info.backing_chain] == [str(b.path), str(a.path)]


def test_overlay_on_missing_backing(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="ghost"):
        Harddrive(tmp_path / "top.qcow2", backing=tmp_path / "ghost.qcow2").create("1M")
    assert not (tmp_path / "top.qcow2").exists()


# -- backing escapes -----------------------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret in a directory next to (not inside) the VM directory."""
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.raw"
    secret.write_bytes(b"top secret".ljust(65536, b"\0"))
    (tmp_path / "vm").mkdir()
    return secret


def _evil(vm_dir: Path, backing: str, fmt: str = "raw") -> Harddrive:
    path = vm_dir / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt, str(path), "1M")
    return Harddrive(path)


def _refused(hd: Harddrive, match: str) -> None:
    for call in (hd.info, lambda: hd.qemu_args(0), lambda: hd.snapshots,
                 lambda: hd.create_snapshot("s"), lambda: hd.resize("2M"), hd.wipe):
        with pytest.raises(BackingEscapeError, match=re.escape(match)):
            call()


def test_absolute_backing_outside_refused(tmp_path: Path, outside: Path) -> None:
    hd = _evil(tmp_path / "vm", str(outside))
    _refused(hd, "outside the allowed directories")
    assert Harddrive(hd.path, allowed_dirs=[outside.parent]).info().backing_chain


def test_relative_dotdot_backing_refused(tmp_path: Path, outside: Path) -> None:
    _refused(_evil(tmp_path / "vm", "../outside/secret.raw"), "outside the allowed")


def test_etc_passwd_backing_refused(tmp_path: Path, outside: Path) -> None:
    _refused(_evil(tmp_path / "vm", "/etc/passwd"), "/etc/passwd")


@pytest.mark.parametrize("name", [
    'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}',
    "nbd://127.0.0.1:10809/export",
    "file:/etc/passwd",
])
def test_protocol_backing_refused(tmp_path: Path, outside: Path, name: str) -> None:
    _refused(_evil(tmp_path / "vm", name), "protocol or json")


def test_symlink_escape_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "vm" / "innocent.raw").symlink_to(outside)
    _refused(_evil(tmp_path / "vm", "innocent.raw"), "resolves to")


def test_device_backing_refused(tmp_path: Path, outside: Path) -> None:
    hd = _evil(tmp_path / "vm", "/dev/zero")
    with pytest.raises(BackingEscapeError, match="not a regular file"):
        Harddrive(hd.path, allowed_dirs=["/dev"]).info()


def test_escape_deep_in_the_chain_refused(tmp_path: Path, outside: Path) -> None:
    vm = tmp_path / "vm"
    mid = vm / "mid.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(outside), "-F", "raw", str(mid), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2",
             str(vm / "top.qcow2"), "1M")
    _refused(Harddrive(vm / "top.qcow2"), "mid.qcow2: refusing backing file")


def test_data_file_outside_refused(tmp_path: Path, outside: Path) -> None:
    path = tmp_path / "vm" / "df.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={outside},data_file_raw=on",
             str(path), "64K")
    with pytest.raises(BackingEscapeError, match="data file"):
        Harddrive(path).info()


def test_backing_without_format_refused(tmp_path: Path) -> None:
    made(tmp_path / "base.qcow2", "1M")
    top = Harddrive(tmp_path / "top.qcow2", backing=tmp_path / "base.qcow2")
    top.create()
    drop_backing_format(top.path)
    with pytest.raises(StorageError, match="no recorded format"):
        top.info()


def test_backing_loop_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", str(a), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", str(b), "1M")
    with pytest.raises(StorageError, match="loops"):
        Harddrive(a).info()


def test_unsupported_backing_format_refused(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "vmdk", str(tmp_path / "base.vmdk"), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.vmdk", "-F", "vmdk",
             str(tmp_path / "top.qcow2"), "1M")
    with pytest.raises(StorageError, match="'vmdk' is not supported"):
        Harddrive(tmp_path / "top.qcow2").info()


# -- in use by a machine, readonly ---------------------------------------------------

class FakeMachine:
    name = "web"

    def __init__(self) -> None:
        self.asked: list[Harddrive] = []

    def disk_snapshots(self, drive: Harddrive) -> Sequence[SnapshotInfo]:
        self.asked.append(drive)
        return [SnapshotInfo.from_json({"id": "1", "name": "live", "vm-state-size": 123,
                                        "date-sec": 0})]


def test_attached_disk_asks_the_machine_and_refuses_offline_changes(tmp_path: Path) -> None:
    hd = made(tmp_path / "a.qcow2")
    hd.create_snapshot("offline")
    machine = FakeMachine()
    hd.attach(machine)
    assert hd.in_use
    assert [s.name for s in hd.snapshots] == ["live"] and machine.asked == [hd]
    for call in (lambda: hd.resize("8M"), lambda: hd.create_snapshot("x"),
                 lambda: hd.apply_snapshot("offline"), lambda: hd.delete_snapshot("offline"),
                 hd.wipe, lambda: hd.create("4M", overwrite=True)):
        with pytest.raises(StateError, match="machine web"):
            call()
    assert hd.info().virtual_size == 4 * MiB  # reading still works (-U)
    with pytest.raises(StateError):
        hd.attach(FakeMachine())
    hd.detach(machine)
    assert not hd.in_use
    assert [s.name for s in hd.snapshots] == ["offline"]


def test_readonly_refuses_changes(tmp_path: Path) -> None:
    made(tmp_path / "a.qcow2")
    hd = Harddrive(tmp_path / "a.qcow2", readonly=True)
    for call in (lambda: hd.resize("8M"), lambda: hd.create_snapshot("x"), hd.wipe,
                 lambda: hd.create("4M", overwrite=True)):
        with pytest.raises(StorageError, match="readonly"):
            call()
    assert hd.info().snapshots == ()


def test_path_with_comma_and_space(tmp_path: Path) -> None:
    hd = made(tmp_path / "my disk,v1.qcow2")
    write(hd.path, 0x31)
    hd.create_snapshot("s")
    write(hd.path, 0x32)
    hd.apply_snapshot("s")
    assert read_content(hd.path, tmp_path)[:4] == b"\x31" * 4
    assert os.path.basename(hd.info().filename) == "my disk,v1.qcow2"


def test_walk_agrees_with_backing_chain_on_a_trusted_chain(tmp_path: Path) -> None:
    from vmanager.storage import qemu_img as runner

    a = made(tmp_path / "a.qcow2", "2M")
    b = Harddrive(tmp_path / "b.qcow2", backing=a)
    b.create()
    walked = b.info()
    listed = runner.info_chain(b.path, fmt="qcow2")
    assert [i.filename for i in listed] == [str(b.path), str(a.path)]
    assert [i.format for i in listed] == ["qcow2", "qcow2"]
    assert walked.backing_chain[0].virtual_size == listed[1].virtual_size
