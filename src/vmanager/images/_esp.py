"""The EFI system partition: GRUB for UEFI from the image itself, on a FAT file system.

UEFI firmware (OVMF) boots a disk without boot entries from the *removable
media path* ``EFI/BOOT/BOOTX64.EFI`` on a FAT partition of type 0xEF. That file
is made inside the root tree by the guest's own ``grub-mkimage -O x86_64-efi``
(package ``grub-efi-amd64-bin``) with an embedded configuration that finds the
root file system by UUID and reads the same ``/boot/grub/grub.cfg`` the BIOS
boot reads, so both ways boot the same menu (and keep doing so after kernel
updates: the menu boots the ``/vmlinuz`` and ``/initrd.img`` links).

The FAT file system is made in a file of its own (``mkfs.fat -C``, package
``dosfstools``) and filled with ``mmd``/``mcopy`` (package ``mtools``), which
write FAT images in files: no loop device, no mount.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from vmanager.errors import GuestBuildError
from vmanager.images._disk import run

#: The ESP's size: ample for GRUB (~2 MiB) and a few EFI tools; FAT16.
ESP_SIZE = 32 << 20
#: Where UEFI firmware looks on a disk it has no boot entry for (x86_64).
REMOVABLE_PATH = "EFI/BOOT/BOOTX64.EFI"
#: Modules built into BOOTX64.EFI: find the root by UUID on an MBR or GPT disk, read
#: grub.cfg, boot Linux, draw on the EFI frame buffer and talk on the serial port.
EFI_MODULES = ("part_msdos", "part_gpt", "ext2", "fat", "search", "search_fs_uuid",
               "configfile", "normal", "linux", "echo", "serial", "terminal", "test",
               "gzio", "efi_gop", "efi_uga", "all_video")


def new_volume_id() -> str:
    """A FAT volume serial (8 hex digits); fstab names it as ``XXXX-XXXX``."""
    return secrets.token_hex(4).upper()


def fstab_uuid(volume_id: str) -> str:
    """How ``blkid`` and fstab spell a FAT serial: ``ABCD-1234``."""
    return f"{volume_id[:4]}-{volume_id[4:]}"


def grub_efi(root: Path) -> bytes:
    """Make ``BOOTX64.EFI`` with the guest's GRUB; copy its modules as grub-install would.

    Needs ``/boot/grub/early.cfg`` (written by :func:`vmanager.images._disk.grub_files`),
    which becomes its embedded configuration.
    """
    lib = root / "usr/lib/grub/x86_64-efi"
    if not (lib / "linux.mod").is_file():
        raise GuestBuildError("the image has no GRUB for UEFI (usr/lib/grub/x86_64-efi); is "
                              "grub-efi-amd64-bin in its package set?")
    grub_dir = root / "boot/grub"
    if not (grub_dir / "early.cfg").is_file():
        raise GuestBuildError("boot/grub/early.cfg is missing: make GRUB for BIOS first")
    mods = grub_dir / "x86_64-efi"
    mods.mkdir(parents=True, exist_ok=True)
    for src in lib.iterdir():
        if src.suffix in (".mod", ".lst") and src.is_file():
            (mods / src.name).write_bytes(src.read_bytes())
    out = grub_dir / "bootx64.efi"
    run(["chroot", str(root), "grub-mkimage", "-O", "x86_64-efi", "-o", "/boot/grub/bootx64.efi",
         "-c", "/boot/grub/early.cfg", "-p", "/boot/grub", *EFI_MODULES],
        what="making GRUB's BOOTX64.EFI")
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def make_esp(path: Path, *, volume_id: str, bootx64: bytes, workdir: Path) -> None:
    """Write a FAT16 file system of :data:`ESP_SIZE` bytes at ``path`` holding BOOTX64.EFI."""
    path.unlink(missing_ok=True)
    run(["mkfs.fat", "-C", "-F", "16", "-n", "EFI", "-i", volume_id, str(path),
         str(ESP_SIZE // 1024)], what="making the EFI system partition's file system")
    efi = workdir / "BOOTX64.EFI"
    efi.write_bytes(bootx64)
    try:
        image = str(path)
        run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], what="making EFI/BOOT on the ESP")
        run(["mcopy", "-i", image, str(efi), "::/" + REMOVABLE_PATH],
            what="copying BOOTX64.EFI to the ESP")
    finally:
        efi.unlink(missing_ok=True)
    if path.stat().st_size != ESP_SIZE:
        raise GuestBuildError(f"mkfs.fat made {path.stat().st_size} bytes, not {ESP_SIZE}")
