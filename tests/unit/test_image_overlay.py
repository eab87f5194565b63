"""The disk vmanager makes for an image guest goes with the definition, and nothing else does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmanager.state.persist import remove_image_overlay


@pytest.fixture
def disks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VMANAGER_STATE_DIR", str(tmp_path))
    d = tmp_path / "disks"
    d.mkdir(mode=0o700)
    return d


def test_the_overlay_of_an_image_guest_is_removed(disks: Path) -> None:
    overlay = disks / "web-debian-12.qcow2"
    overlay.write_bytes(b"QFI\xfb")
    assert remove_image_overlay("web", {"guest": "debian-12"}) == overlay
    assert not overlay.exists()
    assert remove_image_overlay("web", {"guest": "debian-12"}) is None  # already gone


def test_nothing_else_is_touched(disks: Path, tmp_path: Path) -> None:
    mine = tmp_path / "user-disk.qcow2"
    mine.write_bytes(b"keep")
    link = disks / "web-debian-12.qcow2"
    link.symlink_to(mine)
    assert remove_image_overlay("web", {"guest": "debian-12"}) is None
    assert link.is_symlink() and mine.read_bytes() == b"keep"
    other = disks / "db-tiny.qcow2"
    other.write_bytes(b"x")
    assert remove_image_overlay("db", {"guest": "tiny", "disks": [{"path": str(mine)}]}) is None
    assert remove_image_overlay("db", {"guest": "../../x"}) is None
    assert other.exists() and mine.exists() and sorted(os.listdir(disks)) == [
        "db-tiny.qcow2", "web-debian-12.qcow2"]
