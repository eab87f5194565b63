"""qemu-img check through Harddrive.check(), parsed from its JSON report."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmanager import Harddrive
from vmanager.storage import qemu_img
from vmanager.storage.qemu_img import QemuImgError


def test_a_fresh_image_checks_clean(tmp_path: Path) -> None:
    hd = Harddrive(tmp_path / "d.qcow2")
    hd.create("16M")
    result = hd.check()
    assert result.clean and result.total_clusters > 0


def test_a_corrupted_image_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "d.qcow2"
    Harddrive(path).create("16M")
    data = bytearray(path.read_bytes())
    # Point the first L1 entry at a cluster past the end of the file: a corruption.
    l1_offset = int.from_bytes(data[40:48], "big")
    data[l1_offset:l1_offset + 8] = (0x8000000000000000 | (1 << 40)).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    result = qemu_img.check(path, fmt="qcow2")
    assert not result.clean and result.corruptions + result.check_errors > 0


def test_check_of_a_non_image_raises(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an image at all" * 100)
    with pytest.raises(QemuImgError, match="check"):
        qemu_img.check(junk, fmt="qcow2")
