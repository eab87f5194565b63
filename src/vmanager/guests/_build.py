"""Low-level pieces of the tiny guest builder: Debian packages, ELF, xz, cpio.

Nothing here runs a shell; Debian's own tools (``apt-get download``,
``dpkg-deb``) are called with argv lists, everything else is plain Python.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vmanager import hostcmd
from vmanager.errors import CommandError, GuestBuildError, HostError

_XZ_MAGIC = b"\xfd7zXZ\x00"
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def _run(argv: list[str], cwd: Path) -> str:
    try:
        return hostcmd.run(argv, cwd=cwd, timeout=600, what=" ".join(argv)).stdout
    except HostError as exc:
        why = ("; the tiny guest is built from Debian packages and needs apt-get and dpkg-deb"
               if not isinstance(exc, CommandError) else "")
        raise GuestBuildError(f"{exc}{why}") from exc


def download(package: str, into: Path) -> Path:
    """Download one Debian package's .deb into ``into`` and return its path."""
    before = set(into.glob("*.deb"))
    _run(["apt-get", "download", "-q", package], cwd=into)
    new = sorted(set(into.glob("*.deb")) - before)
    if not new:
        found = sorted(into.glob(f"{package}_*.deb"))
        if not found:
            raise GuestBuildError(f"apt-get download {package} produced no .deb")
        return found[-1]
    return new[-1]


def deb_field(deb: Path, field: str) -> str:
    """One control field of a .deb (``dpkg-deb --field``)."""
    return _run(["dpkg-deb", "--field", str(deb), field], cwd=deb.parent).strip()


def resolve_kernel_package(meta_deb: Path) -> str:
    """The concrete ``linux-image-<abi>-amd64`` package a meta-package depends on."""
    depends = deb_field(meta_deb, "Depends")
    for alternative in re.split(r"[,|]", depends):
        pkg = alternative.strip().split(" ", 1)[0]
        if pkg.startswith("linux-image-") and pkg[len("linux-image-"):][:1].isdigit():
            return pkg
    raise GuestBuildError(f"{meta_deb.name} depends on no concrete kernel: {depends!r}")


def extract(deb: Path, into: Path) -> None:
    """Unpack a .deb's files (``dpkg-deb -x``)."""
    into.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(into)], cwd=deb.parent)


def vmlinux_from_bzimage(bzimage: bytes) -> bytes | None:
    """Decompress the ELF vmlinux inside an xz-compressed bzImage, if it has a PVH entry.

    Returns ``None`` when the image is not xz-compressed or the ELF has no
    ``XEN_ELFNOTE_PHYS32_ENTRY`` note (QEMU could not start it through PVH).
    """
    start = bzimage.find(_XZ_MAGIC)
    while start >= 0:
        try:
            decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            elf = decomp.decompress(bzimage[start:])
        except lzma.LZMAError:
            start = bzimage.find(_XZ_MAGIC, start + 1)
            continue
        if elf.startswith(b"\x7fELF") and _has_pvh_note(elf):
            return trim_zero_tails(elf)
        return None
    return None


_PT_LOAD = 1


def trim_zero_tails(elf: bytes) -> bytes:
    """``elf`` with each loadable segment's trailing zero bytes left to its memory size.

    Debian's vmlinux stores its ``.bss`` and ``.init.scratch`` (~21 MB of zeros) in
    the file. QEMU maps the kernel file for as long as it runs (to reload it at a
    reset) and copies every stored byte into guest RAM, so those zeros sat in every
    QEMU's RSS as file pages. An ELF loader zero-fills ``p_memsz - p_filesz`` anyway,
    so the guest sees the same memory. The file ends after the last stored byte;
    section headers, which no loader reads, are dropped.
    """
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise GuestBuildError("not a 64-bit little-endian ELF file")
    out = bytearray(elf)
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    end = phoff + phentsize * phnum
    for i in range(phnum):
        pos = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", elf, pos)
        p_offset, = struct.unpack_from("<Q", elf, pos + 0x08)
        p_filesz, p_memsz = struct.unpack_from("<QQ", elf, pos + 0x20)
        if p_offset + p_filesz > len(elf) or p_filesz > p_memsz:
            raise GuestBuildError(f"ELF program header {i} lies outside the file")
        if p_type == _PT_LOAD:
            segment = elf[p_offset:p_offset + p_filesz]
            p_filesz = len(segment.rstrip(b"\0"))
            struct.pack_into("<Q", out, pos + 0x20, p_filesz)
        end = max(end, p_offset + p_filesz)
    struct.pack_into("<Q", out, 0x28, 0)  # e_shoff: no section headers
    struct.pack_into("<HH", out, 0x3C, 0, 0)  # e_shnum, e_shstrndx
    return bytes(out[:end])


def _sections(elf: bytes) -> Iterator[tuple[str, int, int, int]]:
    """Yield (name, type, offset, size) for each section of an ELF64 little-endian file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise GuestBuildError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = elf[strtab_off:strtab_off + strtab_size]
    for name_off, sh_type, _flags, _addr, offset, size in headers:
        name = strtab[name_off:strtab.index(b"\0", name_off)].decode()
        yield name, sh_type, offset, size


def _has_pvh_note(elf: bytes) -> bool:
    for _name, sh_type, offset, size in _sections(elf):
        if sh_type != 7:  # SHT_NOTE
            continue
        pos, end = offset, offset + size
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + _align(namesz, 4) + _align(descsz, 4)
    return False


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def modinfo(ko: bytes, key: str) -> list[str]:
    """Every value of ``key`` in a kernel module's ``.modinfo`` section."""
    prefix = key.encode() + b"="
    for name, _type, offset, size in _sections(ko):
        if name == ".modinfo":
            return [entry[len(prefix):].decode(errors="replace")
                    for entry in ko[offset:offset + size].split(b"\0")
                    if entry.startswith(prefix)]
    return []


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list of a kernel module."""
    return [d for value in modinfo(ko, "depends") for d in value.split(",") if d]


def _modname(path: Path) -> str:
    return path.name.split(".ko", 1)[0].replace("-", "_")


@dataclass(frozen=True)
class Module:
    """A kernel module picked for the initramfs, decompressed."""

    name: str
    relpath: str  # relative to /lib/modules/<version>
    data: bytes
    depends: tuple[str, ...]
    aliases: tuple[str, ...]


def collect_modules(moddir: Path, wanted: Iterable[str]) -> list[Module]:
    """The wanted modules and everything they depend on, in load order.

    Missing modules are skipped when the kernel has them built in (listed in
    ``modules.builtin``); otherwise an error names them.
    """
    index = {_modname(p): p for p in moddir.rglob("*.ko*")}
    builtin: set[str] = set()
    builtin_file = moddir / "modules.builtin"
    if builtin_file.exists():
        builtin = {_modname(Path(line.strip())) for line in builtin_file.read_text().splitlines()}
    order: list[Module] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        path = index.get(name)
        if path is None:
            if name in builtin:
                return
            raise GuestBuildError(f"kernel module {name!r} is neither in the package "
                                  "nor built in")
        raw = path.read_bytes()
        data = lzma.decompress(raw) if path.name.endswith(".xz") else raw
        deps = modinfo_depends(data)
        for dep in deps:
            visit(dep)
        rel = str(path.relative_to(moddir)).removesuffix(".xz")
        order.append(Module(name, rel, data, tuple(d.replace("-", "_") for d in deps),
                            tuple(modinfo(data, "alias"))))

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """A writer for the ``newc`` cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        blob = header + encoded
        blob += b"\0" * (_align(len(blob), 4) - len(blob))
        blob += data
        blob += b"\0" * (_align(len(data), 4) - len(data))
        self._parts.append(blob)

    def mkdir(self, name: str) -> None:
        """Add a directory (and its parents) once."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self._dirs:
                self._dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file."""
        self.mkdir(os.path.dirname(name.strip("/")))
        self._entry(name.strip("/"), stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        self.mkdir(os.path.dirname(name.strip("/")))
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node."""
        self.mkdir(os.path.dirname(name.strip("/")))
        self._entry(name.strip("/"), stat.S_IFCHR | mode, rdev=(major, minor))

    def getvalue(self) -> bytes:
        """The archive, trailer included."""
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)
