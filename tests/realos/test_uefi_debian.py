"""The Debian image booting under UEFI (OVMF), started by the ``vmanager`` command in another
process and driven here through ``Machine.attach``: the guest agent, commands, and an
orderly power-off through the attached object.

One UEFI boot (about a minute under TCG). The BIOS boot of the same image is
tests/realos/test_debian_guest.py.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import pytest

from vmanager import Machine, images, paths
from vmanager.errors import HostError, VmanagerError
from vmanager.qemu import firmware
from vmcli import ok, vm
from vmtest_util import unique_name

pytestmark = pytest.mark.guest
# The UEFI variable service's GUID: BootCurrent is set by the firmware's boot manager.
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

try:
    OVMF: firmware.UefiFirmware | None = firmware.find_uefi()
except HostError:
    OVMF = None


@pytest.mark.skipif(OVMF is None, reason="OVMF is not installed (scripts/setup installs it)")
def test_debian_boots_under_uefi_and_is_driven_through_attach(
        debian_image: images.Image) -> None:
    assert OVMF is not None and "uefi" in debian_image.firmware
    name = unique_name("efi")
    overlay = paths.state_dir() / "disks" / f"{name}-debian-12.qcow2"
    ok("define", name, "--guest", "debian-12", "--firmware", "uefi", "--memory", "1024")
    nvram = paths.state_dir() / "nvram" / f"{name}_VARS.fd"
    m: Machine | None = None
    try:
        ok("start", name)                  # that process exits; QEMU runs on
        assert stat.S_IMODE(nvram.stat().st_mode) == 0o600
        m = Machine.attach(name)
        assert m.firmware == "uefi" and m.flash.vars == nvram and m.flash.code == OVMF.code
        assert any("pflash0=fw-code,pflash1=fw-vars" in a for a in m.argv)
        m.wait_ready(600)
        assert m.commands.via == "agent"
        assert m.agent.os_info().version_id == "12"
        # UEFI booted it: the kernel sees EFI runtime services and the boot manager's
        # BootCurrent; the image's own GRUB (BOOTX64.EFI on the ESP) loaded the kernel.
        assert m.succeed("cat /sys/firmware/efi/fw_platform_size").strip() == "64"
        assert m.execute(f"test -e /sys/firmware/efi/efivars/BootCurrent-{EFI_GLOBAL}"
                         ).status == 0
        assert m.succeed("cat /proc/cmdline").startswith("BOOT_IMAGE=/vmlinuz")
        assert m.succeed("findmnt -n -o FSTYPE /boot/efi").strip() == "vfat"
        assert m.execute("test -s /boot/efi/EFI/BOOT/BOOTX64.EFI").status == 0
        pid = m.pid
        assert pid is not None
        # systemd powered off (ShutdownTimeout otherwise); QEMU is not this process's
        # child, so its exit status is unknown: -1, as AdoptedProcess documents
        assert m.shutdown(timeout=120) in (0, -1)
        assert not Path(f"/proc/{pid}/cmdline").exists() or \
            Path(f"/proc/{pid}/cmdline").read_bytes() == b""
        assert not m.run_dir.exists()
        # the defined machine keeps its variables, which the firmware wrote
        assert nvram.read_bytes() != OVMF.vars_template.read_bytes()
    finally:
        if m is not None:
            m.kill()
        else:
            with contextlib.suppress(VmanagerError):
                Machine.attach(name).kill()
        undefined = vm("undefine", name)
    assert undefined.returncode == 0, undefined.stderr
    assert not nvram.exists() and not overlay.exists()   # undefine removed what define made
