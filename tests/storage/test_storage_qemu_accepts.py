"""The -blockdev/-device arguments are accepted by a real QEMU (stopped with -S, no guest)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import needs_qemu_img

from vmanager.storage import CD, Harddrive

QEMU = "qemu-system-x86_64"
pytestmark = [needs_qemu_img,
              pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"needs {QEMU}")]


def query_block(machine: str, args: list[str]) -> list[dict[str, Any]]:
    """Start QEMU paused with ``args``, return QMP query-block, quit."""
    argv = [QEMU, "-M", machine, "-S", "-nodefaults", "-display", "none", "-accel", "tcg",
            "-qmp", "stdio", *args]
    commands = "".join(json.dumps({"execute": c}) + "\n"
                       for c in ("qmp_capabilities", "query-block", "quit"))
    proc = subprocess.run(argv, input=commands, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        reply = json.loads(line)
        if isinstance(reply.get("return"), list):
            return reply["return"]  # type: ignore[no-any-return]
    raise AssertionError(f"no query-block reply in {proc.stdout!r}")


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_qemu_accepts_disks_and_cds(tmp_path: Path, machine: str) -> None:
    base = Harddrive(tmp_path / "base.qcow2")
    base.create("4M")
    overlay = Harddrive(tmp_path / "over lay,1.qcow2", backing=base)
    overlay.create()
    scsi = Harddrive(base.path, readonly=True, interface="scsi")
    ide = Harddrive(tmp_path / "ide.raw", format="raw", interface="ide")
    ide.create("1M")
    iso = tmp_path / "x.iso"
    iso.write_bytes(bytes(2048 * 20))
    # q35's AHCI ports take one device each; pc's two IDE buses place devices themselves
    bus: list[str | None] = ["ide.0", "ide.1"] if machine == "q35" else [None, None]
    args = [*overlay.qemu_args(0, bootindex=2), *scsi.qemu_args(1), *ide.qemu_args(2, bus=bus[0]),
            *CD(iso).qemu_args(0, bus=bus[1], bootindex=1),
            *CD(iso, interface="scsi").qemu_args(1)]
    blocks = {b["inserted"]["node-name"]: b for b in query_block(machine, args)}
    assert set(blocks) == {"disk0", "disk1", "disk2", "cd0", "cd1"}

    top = blocks["disk0"]["inserted"]
    assert top["file"] == str(overlay.path) and top["ro"] is False
    assert top["image"]["backing-image"]["filename"] == str(base.path)
    assert top["backing_file_depth"] == 1
    assert blocks["disk1"]["inserted"]["ro"] is True
    assert blocks["disk2"]["inserted"]["drv"] == "raw"
    for cd in ("cd0", "cd1"):
        assert blocks[cd]["removable"] is True and blocks[cd]["tray_open"] is False
        assert blocks[cd]["qdev"] == cd and blocks[cd]["inserted"]["ro"] is True
