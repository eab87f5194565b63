"""A machine's snapshot state disk goes with it: lab ``down`` and ``undefine`` remove it.

A machine without a writable qcow2 disk keeps its snapshots (and so a lab's
checkpoints) in ``STATE/machines/NAME/vmstate.qcow2``; before, ``down`` and
``undefine`` left that file (80 MB for a tiny guest) behind for good.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from vmanager import paths
from vmcli import ok, vm

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)


def _state_dir(name: str) -> Path:
    return paths.state_dir() / "machines" / name


def test_lab_down_removes_the_state_disk_a_checkpoint_made(tiny: object,
                                                            tmp_path: Path) -> None:
    t = secrets.token_hex(2)
    lab, name = f"sd{t}", f"sdm{t}"
    path = tmp_path / "lab.toml"
    path.write_text(f'[lab]\nname = "{lab}"\n\n[machines.{name}]\nguest = "tiny"\n'
                    'memory = 128\n')
    ok("up", str(path), "--wait-ready")
    try:
        ok("checkpoint", str(path), "c1")
        assert (_state_dir(name) / "vmstate.qcow2").is_file()
    finally:
        ok("down", str(path))
    assert not _state_dir(name).exists()


def test_undefine_removes_the_state_disk_of_its_snapshots(tiny: object) -> None:
    name = f"sdu{secrets.token_hex(2)}"
    ok("define", name, "--guest", "tiny", "--memory", "128")
    try:
        ok("start", name, "--wait-ready")
        ok("snapshot", name, "save", "s1")
        ok("stop", name)
        assert (_state_dir(name) / "vmstate.qcow2").is_file()  # kept between runs
        # something of the user's in that directory is never touched
        (_state_dir(name) / "notes.txt").write_text("mine")
    finally:
        vm("stop", name)
        ok("undefine", name)
    assert not (_state_dir(name) / "vmstate.qcow2").exists()
    assert (_state_dir(name) / "notes.txt").read_text() == "mine"
    (_state_dir(name) / "notes.txt").unlink()
    _state_dir(name).rmdir()
