"""A disk that boots under BIOS and UEFI from a root directory, without loop devices or mounts.

The disk is assembled in a regular file:

1. ``sfdisk`` writes an MBR partition table: an EFI system partition (type
   0xEF) at 1 MiB, then the bootable Linux root partition filling the rest
   (last, so cloud-init's growpart can grow it);
2. the ESP's FAT file system, made in a file of its own by
   :mod:`vmanager.images._esp`, is copied to its place;
3. ``mke2fs -d ROOT -E offset=...`` writes an ext4 file system holding the
   root directory straight into its partition (no mount, no loop device);
4. GRUB's own pieces, made *inside* the root by the guest's ``grub-mkimage``,
   are written where ``grub-bios-setup`` would put them: ``boot.img`` into the
   MBR's code area, ``core.img`` into the gap before the first partition
   (sector 1 onwards, which is where ``boot.img`` and ``core.img``'s first
   sector look by default, so no block list needs patching).

SeaBIOS runs ``boot.img`` from the MBR; OVMF runs ``EFI/BOOT/BOOTX64.EFI``
from the ESP. Both GRUBs find the root by UUID and read the same
``/boot/grub/grub.cfg``.

Nothing here needs clean-up beyond the files it writes: a failure at any step
leaves no kernel object (loop device, mount) behind.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid as uuidlib
from collections.abc import Sequence
from pathlib import Path

from vmanager.errors import GuestBuildError

log = logging.getLogger(__name__)

SECTOR = 512
#: Where the first partition (the ESP) starts; the gap before it holds GRUB's core.img.
PART_START = 1 << 20
#: The MBR's boot code area (the partition table follows at 446).
_MBR_CODE = 440
#: Modules built into core.img: enough to find the root by UUID and read grub.cfg.
CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search", "search_fs_uuid", "configfile",
                "normal", "linux", "echo", "serial", "terminal", "test", "gzio")


def run(argv: Sequence[str], *, what: str, timeout: float = 600.0,
        input_data: bytes | None = None) -> str:
    """Run a build tool (argv list); raise :class:`GuestBuildError` with its stderr."""
    log.debug("running %s", argv)
    try:
        proc = subprocess.run(list(argv), input=input_data, capture_output=True,
                              check=False, timeout=timeout,
                              stdin=None if input_data is not None else subprocess.DEVNULL,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as exc:
        raise GuestBuildError(f"{what}: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise GuestBuildError(f"{what}: {argv[0]} took longer than {timeout:g} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise GuestBuildError(f"{what}: {' '.join(argv)} failed with status "
                              f"{proc.returncode}:\n{err}")
    return proc.stdout.decode(errors="replace")


def grub_files(root: Path, root_uuid: str, append: str) -> tuple[bytes, bytes]:
    """Make GRUB for ``root`` with the guest's own GRUB; return (boot.img, core.img).

    Writes ``/boot/grub/grub.cfg`` (booting ``/vmlinuz`` and ``/initrd.img``, the
    links Debian's kernel packages keep current) and copies the modules to
    ``/boot/grub/i386-pc`` as ``grub-install`` would.
    """
    lib = root / "usr/lib/grub/i386-pc"
    if not (lib / "boot.img").is_file():
        raise GuestBuildError("the image has no GRUB for BIOS (usr/lib/grub/i386-pc/boot.img); "
                              "is grub-pc-bin in its package set?")
    grub_dir = root / "boot/grub"
    mods = grub_dir / "i386-pc"
    mods.mkdir(parents=True, exist_ok=True)
    for src in lib.iterdir():
        if src.suffix in (".mod", ".lst", ".img") and src.is_file():
            (mods / src.name).write_bytes(src.read_bytes())
    (grub_dir / "grub.cfg").write_text(grub_cfg(root_uuid, append))
    # Built into core.img and BOOTX64.EFI alike: both read the one menu.
    early = grub_dir / "early.cfg"
    early.write_text(f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
                     "set prefix=($root)/boot/grub\n"
                     "configfile ($root)/boot/grub/grub.cfg\n")
    run(["chroot", str(root), "grub-mkimage", "-O", "i386-pc", "-o", "/boot/grub/core.img",
         "-c", "/boot/grub/early.cfg", "-p", "/boot/grub", *CORE_MODULES],
        what="making GRUB's core.img")
    core = (grub_dir / "core.img").read_bytes()
    if len(core) > PART_START - SECTOR:
        raise GuestBuildError(f"GRUB's core.img is {len(core)} bytes; it does not fit "
                              "before the first partition")
    return (lib / "boot.img").read_bytes(), core


def grub_cfg(root_uuid: str, append: str) -> str:
    """The menu: one entry, on the serial console and the screen, no wait."""
    return ("serial --unit=0 --speed=115200\n"
            "terminal_input serial console\n"
            "terminal_output serial console\n"
            "set timeout=0\n"
            "menuentry 'Debian GNU/Linux' {\n"
            f"  search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"  linux /vmlinuz root=UUID={root_uuid} ro {append}\n"
            "  initrd /initrd.img\n"
            "}\n")


def new_uuid() -> str:
    """A file system UUID."""
    return str(uuidlib.uuid4())


def assemble(root: Path, raw: Path, *, size: int, root_uuid: str,
             boot_img: bytes, core_img: bytes, esp: Path) -> None:
    """Write a raw disk of ``size`` bytes at ``raw``: the FAT image ``esp`` as its EFI
    system partition, ``root`` as ext4 after it, GRUB for BIOS in the MBR and gap."""
    esp_size = esp.stat().st_size
    root_start = PART_START + esp_size
    if esp_size % (1 << 20) or not esp_size:
        raise GuestBuildError(f"the ESP image is {esp_size} bytes, not whole MiB")
    if size % SECTOR or size < root_start + (64 << 20):
        raise GuestBuildError(f"disk size {size} is too small or not whole sectors")
    with raw.open("wb") as f:
        f.truncate(size)
    root_sectors = (size - root_start) // SECTOR
    table = (f"label: dos\nunit: sectors\n"
             f"start={PART_START // SECTOR}, size={esp_size // SECTOR}, type=ef\n"
             f"start={root_start // SECTOR}, size={root_sectors}, type=83, bootable\n")
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)],
        what="writing the partition table", input_data=table.encode())
    block = 4096
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-U", root_uuid,
         "-E", f"offset={root_start}", "-b", str(block), "-d", str(root),
         str(raw), str(root_sectors * SECTOR // block)],
        what="writing the root file system")
    with raw.open("r+b") as f:
        mbr = bytearray(f.read(SECTOR))
        mbr[:_MBR_CODE] = boot_img[:_MBR_CODE]
        f.seek(0)
        f.write(mbr)
        f.seek(SECTOR)
        f.write(core_img)
        f.seek(PART_START)
        with esp.open("rb") as src:
            while chunk := src.read(1 << 20):
                f.write(chunk)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    found: list[str] = []
    prefix = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found
