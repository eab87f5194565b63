"""UEFI firmware on real QEMU: OVMF runs from read-only flash with a variable store of the
machine's own, which the firmware writes; a missing OVMF is a clear error.

No guest is booted here (a machine without disks drops to OVMF's shell); the Debian
image booting under UEFI is tests/realos/test_uefi_debian.py.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from vmanager import Machine, State
from vmanager.errors import ConfigError, HostError
from vmanager.qemu import firmware
from vmtest_util import unique_name

pytestmark = pytest.mark.guest

try:
    OVMF: firmware.UefiFirmware | None = firmware.find_uefi()
except HostError:
    OVMF = None
needs_ovmf = pytest.mark.skipif(OVMF is None, reason="OVMF is not installed (apt-get install "
                                "ovmf; scripts/setup does)")


@needs_ovmf
def test_ovmf_runs_from_flash_and_writes_its_own_variable_store(tmp_path: Path) -> None:
    assert OVMF is not None
    nvram = tmp_path / "fw_VARS.fd"
    m = Machine(unique_name("efi"), firmware="uefi", nvram=nvram)
    try:
        m.start_vm()
        nodes = {n["node-name"]: n for n in m.qmp("query-named-block-nodes", {"flat": True})}
        assert nodes["fw-code"]["ro"] and nodes["fw-code"]["file"] == str(OVMF.code)
        assert not nodes["fw-vars"]["ro"] and nodes["fw-vars"]["file"] == str(nvram)
        assert stat.S_IMODE(nvram.stat().st_mode) == 0o600
        assert m.flash.vars == nvram and m.definition()["firmware"] == "uefi"
        # the firmware's boot manager ran: it found no disk and said so on the serial line
        m.console.wait_for("BdsDxe", timeout=180)
        # the writable flash is no disk a whole-machine snapshot must cover: it works
        m.snapshot("fw")
        m.load_snapshot("fw")
        assert m.status() == "running"
    finally:
        m.stop()
        m.snapshots.delete_state_disk()
    # kept, and written by the firmware (its boot options), not the template any more
    assert nvram.read_bytes() != OVMF.vars_template.read_bytes()
    assert m.state is State.DEFINED and m.flash.vars is None

    plain = Machine(unique_name("efi"), firmware="uefi")
    try:
        plain.start_vm()
        store = plain.flash.vars
        assert store is not None and store.parent == plain.run_dir
        assert stat.S_IMODE(store.stat().st_mode) == 0o600
        assert store.read_bytes() == OVMF.vars_template.read_bytes()
    finally:
        plain.stop()
    assert not store.exists() and not plain.run_dir.exists()


def test_missing_ovmf_is_named_and_the_start_leaves_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(firmware, "descriptor_dirs", lambda: [tmp_path / "none"])
    monkeypatch.setattr(firmware, "KNOWN_PAIRS", (("/nonexistent/OVMF_CODE_4M.fd",
                                                  "/nonexistent/OVMF_VARS_4M.fd"),))
    nvram = tmp_path / "never.fd"
    m = Machine(unique_name("efi"), firmware="uefi", nvram=nvram)
    with pytest.raises(HostError, match=r"/nonexistent/OVMF_CODE_4M\.fd") as info:
        m.start_vm()
    assert "apt-get install ovmf" in str(info.value)
    assert m.state is State.DEFINED and m.pid is None
    assert not nvram.exists() and not m.run_dir.exists()


@needs_ovmf
def test_a_uefi_machine_migrates_with_its_variables_to_a_uefi_machine_only() -> None:
    assert OVMF is not None
    src = Machine(unique_name("efi"), firmware="uefi")
    bios = Machine(unique_name("efi"))
    dst = Machine(unique_name("efi"), firmware="uefi")
    try:
        src.start_vm()
        src.console.wait_for("BdsDxe", timeout=180)     # OVMF has written its variables
        with pytest.raises(ConfigError, match="firmware differs"):
            src.migrate(bios)
        assert src.status() == "running" and not bios.is_alive()
        src.migrate(dst)
        assert dst.status() == "running" and not src.is_alive()
        # the flash contents travelled with the RAM and were written to dst's own store
        store = dst.flash.vars
        assert store is not None and store.parent == dst.run_dir
        deadline = time.monotonic() + 30
        while store.read_bytes() == OVMF.vars_template.read_bytes():
            assert time.monotonic() < deadline, "the migrated variables never reached the store"
            time.sleep(0.2)
    finally:
        for m in (src, bios, dst):
            m.kill()
