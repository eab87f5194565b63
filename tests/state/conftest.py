"""A module-scoped tiny guest with a qcow2 disk and a CD, for the state tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmanager import CD, Harddrive, Machine
from vmanager.guests import TinyGuest


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the disk and two ISOs (first.txt / second.txt)."""
    base = tmp_path_factory.mktemp("media")
    for label in ("first", "second"):
        src = base / f"{label}-src"
        src.mkdir()
        (src / f"{label}.txt").write_text(f"hello from the {label} ISO\n")
        CD.from_directory(src, output=base / f"{label}.iso", volume_id=label)
    return base


@pytest.fixture(scope="module")
def rich(tiny: TinyGuest, media: Path) -> Iterator[Machine]:
    """A booted guest with a 64 MiB qcow2 virtio disk (vda) and an IDE CD (sr0)."""
    disk = Harddrive(media / "disk.qcow2", size="64M")
    disk.create()
    m = Machine(f"st{secrets.token_hex(3)}", **tiny.machine_args(), memory=256, harddrives=disk,
                cd=CD(media / "first.iso"))
    m.start_vm()
    m.wait_ready(120)
    yield m
    m.kill()
