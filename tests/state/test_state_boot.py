"""Boot order: after ``change_boot_device`` and a reset the firmware boots the chosen device.

No ``kernel=`` here: SeaBIOS boots for real. The disk and the CD carry the
tiny guest's kernel and initramfs behind isolinux (an isohybrid image boots
from a CD and, written to a disk, from the disk), each with its own kernel
command line ``vm.bootfrom=disk`` or ``vm.bootfrom=cd``, which the guest
reports from ``/proc/cmdline``. Needs Debian's ``isolinux`` and
``syslinux-common`` packages.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from vmanager import CD, Harddrive, Machine
from vmanager.errors import NotFoundError, StateError
from vmanager.guests import READY_LINE, TinyGuest

pytestmark = pytest.mark.guest

ISOLINUX = Path("/usr/lib/ISOLINUX")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")


def _bootable_iso(tiny: TinyGuest, out: Path, bootfrom: str) -> Path:
    """An isohybrid ISO that boots the tiny guest with ``vm.bootfrom=<bootfrom>``."""
    bzimage = tiny.kernel.parent / "vmlinuz"  # isolinux cannot boot the PVH vmlinux
    tree = out.parent / f"{out.stem}-tree"
    (tree / "isolinux").mkdir(parents=True)
    shutil.copy(ISOLINUX / "isolinux.bin", tree / "isolinux")
    shutil.copy(SYSLINUX_BIOS / "ldlinux.c32", tree / "isolinux")
    shutil.copy(bzimage, tree / "vmlinuz")
    shutil.copy(tiny.initrd, tree / "initrd.img")
    (tree / "isolinux" / "isolinux.cfg").write_text(
        "DEFAULT tiny\nPROMPT 0\nTIMEOUT 0\nLABEL tiny\n  KERNEL /vmlinuz\n"
        f"  APPEND initrd=/initrd.img {tiny.append()} vm.bootfrom={bootfrom}\n")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-V", bootfrom,
                    "-isohybrid-mbr", str(ISOLINUX / "isohdpfx.bin"),
                    "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
                    "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                    "-r", "-J", str(tree)], check=True, stdin=subprocess.DEVNULL)
    return out


@pytest.mark.skipif(not (ISOLINUX / "isolinux.bin").is_file()
                    or not (SYSLINUX_BIOS / "ldlinux.c32").is_file()
                    or shutil.which("xorriso") is None,
                    reason="needs the isolinux, syslinux-common and xorriso packages")
def test_reboot_boots_the_chosen_device(tiny: TinyGuest, tmp_path: Path) -> None:
    if not (tiny.kernel.parent / "vmlinuz").is_file():
        pytest.skip("the tiny guest cache has no bzImage")
    disk_iso = _bootable_iso(tiny, tmp_path / "disk.iso", "disk")
    cd_iso = _bootable_iso(tiny, tmp_path / "cd.iso", "cd")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(disk_iso),
                    str(tmp_path / "disk.qcow2")], check=True, stdin=subprocess.DEVNULL)
    m = Machine(f"bt{secrets.token_hex(3)}", memory=256, cpu_model="qemu64",
                harddrives=Harddrive(tmp_path / "disk.qcow2"), cd=CD(cd_iso))
    try:
        m.start_vm()
        m.wait_ready(180)
        # Default order: disks first.
        assert "vm.bootfrom=disk" in m.succeed("cat /proc/cmdline")

        assert m.change_boot_device("cd") == ["cd0", "disk0"]
        m.console.mark()
        m.qmp("system_reset")
        m.console.wait_for(READY_LINE, timeout=180)
        assert "vm.bootfrom=cd" in m.wait_until_succeeds("cat /proc/cmdline", timeout=60)

        assert m.change_boot_device(m.harddrives[0]) == ["disk0", "cd0"]
        with pytest.raises(NotFoundError, match="no network device"):
            m.change_boot_device("network")
        m.console.mark()
        m.succeed("sync")
        m.qmp("system_reset")
        m.console.wait_for(READY_LINE, timeout=180)
        assert "vm.bootfrom=disk" in m.wait_until_succeeds("cat /proc/cmdline", timeout=60)
    finally:
        m.kill()


def test_direct_kernel_boot_has_no_boot_order(shared_machine: Machine) -> None:
    with pytest.raises(StateError, match="boots its kernel directly"):
        shared_machine.change_boot_device("disk")
