"""delete_state_disk removes the state disk and the machine's directory it lived in."""

from __future__ import annotations

from vmanager import Machine
from vmtest_util import unique_name


def test_deleting_the_state_disk_leaves_no_empty_directory() -> None:
    m = Machine(unique_name("sd"))
    disk = m.state_disk
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"QFI\xfb")  # stands in for the qcow2 the first snapshot makes
    m.delete_state_disk()
    assert not disk.exists() and not disk.parent.exists()
    m.delete_state_disk()  # nothing there: fine


def test_a_directory_with_other_files_stays() -> None:
    m = Machine(unique_name("sd"))
    disk = m.state_disk
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"QFI\xfb")
    other = disk.parent / "overlay.qcow2"
    other.write_bytes(b"")
    try:
        m.delete_state_disk()
        assert not disk.exists() and other.exists()
    finally:
        other.unlink()
        disk.parent.rmdir()
