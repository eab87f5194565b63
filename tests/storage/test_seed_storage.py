"""The seed's storage calls on real guests: ``CD.eject()``, ``Machine.resize_harddrive``
offline and online, and ``qemu_string`` handed to QEMU as it is.

Every effect is checked where it happens: in the guest (its block devices) and in QEMU
(QMP ``query-block``).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import CD, Harddrive, Machine
from vmanager.errors import StateError, StorageError
from vmanager.guests import TinyGuest
from vmtest_util import unique_name

pytestmark = pytest.mark.guest

MiB = 1 << 20
READ_CD = "dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>&1"


def _iso(tmp: Path, label: str) -> CD:
    src = tmp / f"{label}-src"
    src.mkdir()
    (src / f"{label}.txt").write_text(f"hello from the {label} ISO\n")
    return CD.from_directory(src, output=tmp / f"{label}.iso", volume_id=label)


def _medium(m: Machine) -> dict[str, Any]:
    return next(b for b in m.qmp("query-block") if b.get("qdev") == "cd0")


@pytest.fixture(scope="module")
def cd_machine(tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    tmp = tmp_path_factory.mktemp("cd")
    m = Machine(unique_name("cd"), **tiny.machine_args(), memory=256, cd=_iso(tmp, "first"))
    m.start_vm()
    m.wait_ready(120)
    yield m
    m.kill()


def _guest_reads_the_cd(m: Machine, label: str) -> None:
    m.wait_until_succeeds(READ_CD, timeout=30)
    m.succeed("mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd")
    try:
        assert f"{label} ISO" in m.succeed(f"cat /mnt/cd/{label}.txt")
    finally:
        m.succeed("umount /mnt/cd")


def test_cd_eject_takes_the_medium_out_of_its_machine(cd_machine: Machine) -> None:
    m = cd_machine
    cd = m.cd
    assert cd is not None and cd.attached_to == (m.name,)
    _guest_reads_the_cd(m, "first")
    cd.eject()                                  # the CD object, not the machine
    assert m.cd is None and cd.attached_to == ()
    assert "inserted" not in _medium(m) and _medium(m)["tray_open"] is True
    out = m.fail(READ_CD)                       # the guest's drive is empty
    assert "medium" in out.lower() or out == ""
    with pytest.raises(StateError, match="not in any running machine's drive"):
        cd.eject()
    with pytest.raises(StateError, match="not in the drive of machine"):
        cd.eject(machine=m)
    with pytest.raises(StateError, match="no CD"):
        m.eject()
    m.change_cd(cd)                             # back in
    assert cd.attached_to == (m.name,)
    _guest_reads_the_cd(m, "first")
    cd.eject(machine=m)                         # naming the machine works too
    assert m.cd is None and "inserted" not in _medium(m)
    m.change_cd(cd)                             # back in, for the next test
    _guest_reads_the_cd(m, "first")


def test_machine_eject_calls_cd_eject(cd_machine: Machine,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    m = cd_machine
    cd = m.cd
    assert cd is not None
    calls: list[Any] = []
    real = cd.eject

    def spy(**kwargs: Any) -> None:
        calls.append(kwargs)
        real(**kwargs)

    monkeypatch.setattr(cd, "eject", spy)
    m.eject()
    assert len(calls) == 1 and calls[0]["machine"].name == m.name
    assert m.cd is None and "inserted" not in _medium(m)
    assert m.fail(READ_CD) is not None
    m.change_cd(cd)
    _guest_reads_the_cd(m, "first")


def test_a_cd_in_no_drive_cannot_be_ejected(tmp_path: Path) -> None:
    cd = _iso(tmp_path, "loose")
    with pytest.raises(StateError, match="not in any running machine's drive"):
        cd.eject()


# -- resize_harddrive ---------------------------------------------------------------------
def _guest_size(m: Machine, dev: str = "vda") -> int:
    return int(m.succeed(f"blockdev --getsize64 /dev/{dev}").strip())


def test_resize_harddrive_offline_and_online(make_machine: Callable[..., Machine],
                                             tmp_path: Path) -> None:
    disk = Harddrive(tmp_path / "d.qcow2", size="64M")
    disk.create()
    m = make_machine(harddrives=disk)
    # stopped: offline, through Harddrive.resize()
    assert m.resize_harddrive(disk, "80M") == 80 * MiB
    assert disk.info().virtual_size == 80 * MiB
    with pytest.raises(StorageError, match="shrink=True"):
        m.resize_harddrive(0, "16M")
    m.start_vm()
    m.wait_ready(120)
    assert _guest_size(m) == 80 * MiB
    # running: online, the guest sees it at once
    assert m.resize_harddrive(0, "96M") == 96 * MiB
    m.wait_until_succeeds(f"test $(blockdev --getsize64 /dev/vda) = {96 * MiB}", timeout=30)
    with pytest.raises(StorageError, match="shrink=True"):
        m.resize_harddrive(0, "72M")
    assert _guest_size(m) == 96 * MiB
    assert m.resize_harddrive(0, "72M", shrink=True) == 72 * MiB
    m.wait_until_succeeds(f"test $(blockdev --getsize64 /dev/vda) = {72 * MiB}", timeout=30)
    m.stop()
    # stopped again: offline shrink only when asked
    assert m.resize_harddrive(0, "48M", shrink=True) == 48 * MiB
    assert disk.info().virtual_size == 48 * MiB
    m.start_vm()
    m.wait_ready(120)
    assert _guest_size(m) == 48 * MiB


# -- qemu_string ----------------------------------------------------------------------------
def _image_with(tmp: Path, name: str, marker: bytes, fmt: str) -> Path:
    raw = tmp / f"{name}.src"
    raw.write_bytes(marker.ljust(MiB, b"\0"))
    out = tmp / name
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(out)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    raw.unlink()
    return out


def test_qemu_string_is_accepted_as_is_and_attaches_exactly_that_image(
        tiny: TinyGuest, tmp_path: Path) -> None:
    odd = tmp_path / "odd dir, 'quoted'"
    odd.mkdir()
    base = Harddrive(_image_with(odd, "base,1.qcow2", b"marker-of-the-base", "qcow2"))
    overlay = Harddrive(odd / "over lay.qcow2", backing=base)
    overlay.create()
    plain = Harddrive(_image_with(odd, "plain.raw", b"marker-of-the-raw-disk", "raw"),
                      format="raw")
    cd = _iso(odd, "seedcd")
    argv = [*shlex.split(overlay.qemu_string), *shlex.split(plain.qemu_string),
            *shlex.split(cd.qemu_string)]
    name = unique_name("qs")
    m = Machine(name, **tiny.machine_args(name), memory=256, extra_args=argv)
    try:
        m.start_vm()
        files = {b["inserted"]["file"]: b for b in m.qmp("query-block") if "inserted" in b}
        assert {str(overlay.path), str(plain.path), str(cd.path)} <= set(files)
        top = files[str(overlay.path)]["inserted"]
        assert top["image"]["backing-image"]["filename"] == str(base.path)
        assert files[str(cd.path)]["removable"] is True
        m.wait_ready(120)
        seen = {m.succeed(f"head -c 32 /dev/{dev} | tr -d '\\0'") for dev in ("vda", "vdb")}
        assert seen == {"marker-of-the-base", "marker-of-the-raw-disk"}
        _guest_reads_the_cd(m, "seedcd")
    finally:
        m.kill()
