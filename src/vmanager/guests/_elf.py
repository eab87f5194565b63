"""ELF files picked from unpacked Debian packages: the libraries they need, their loader.

Used by the Python guest to copy an interpreter and its extension modules with
exactly the shared libraries they load (``DT_NEEDED``, followed transitively).
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from vmanager.errors import GuestBuildError
from vmanager.guests import _build

log = logging.getLogger(__name__)

_DT_NEEDED = 1
_SHT_DYNAMIC = 6


def needed(elf: bytes) -> list[str]:
    """The ``DT_NEEDED`` sonames of an ELF64 file."""
    sections = {name: (sh_type, off, size) for name, sh_type, off, size in _build._sections(elf)}
    dynamic = next(((off, size) for sh_type, off, size in sections.values()
                    if sh_type == _SHT_DYNAMIC), None)
    if dynamic is None or ".dynstr" not in sections:
        return []
    _t, str_off, _s = sections[".dynstr"]
    names = []
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", elf, pos)
        if tag == 0:
            break
        if tag == _DT_NEEDED:
            end = elf.index(b"\0", str_off + value)
            names.append(elf[str_off + value:end].decode())
    return names


class Files:
    """Files picked from the unpacked packages, symlinks kept, each added once."""

    def __init__(self, cpio: _build.Cpio, tree: Path) -> None:
        self.cpio, self.tree = cpio, tree
        self.added: set[str] = set()

    def resolve(self, rel: str, *, add: bool = False) -> str:
        """The regular file ``rel`` leads to, inside the tree (absolute links too)."""
        for _hop in range(16):
            path = self.tree / rel
            if path.is_symlink():
                target = os.readlink(path)
                if add and rel not in self.added:
                    self.cpio.symlink(rel, target)
                    self.added.add(rel)
                rel = os.path.normpath(target.lstrip("/") if target.startswith("/")
                                       else os.path.join(os.path.dirname(rel), target))
                continue
            if not path.is_file():
                raise GuestBuildError(f"Python guest: {rel} is missing from the packages")
            return rel
        raise GuestBuildError(f"Python guest: too many symbolic links at {rel}")

    def add(self, rel: str) -> None:
        """Add ``rel``, and when it is a symlink, the links and file it leads to."""
        real = self.resolve(rel, add=True)
        if real not in self.added:
            path = self.tree / real
            self.cpio.file(real, path.read_bytes(), path.stat().st_mode & 0o777)
            self.added.add(real)

    def add_elf(self, rel: str, libs: dict[str, str]) -> bool:
        """Add an ELF file and every library it needs; ``False`` if one is missing."""
        wanted: list[str] = []
        todo = needed((self.tree / rel).read_bytes())
        while todo:
            soname = todo.pop()
            if soname in wanted:
                continue
            if soname not in libs:
                log.debug("Python guest: %s needs %s, which no package has", rel, soname)
                return False
            wanted.append(soname)
            todo += needed((self.tree / self.resolve(libs[soname])).read_bytes())
        self.add(rel)
        for soname in wanted:
            self.add(libs[soname])
        return True


def interpreter(elf: bytes) -> str:
    """The program interpreter (dynamic loader) an ELF executable names."""
    for name, _type, offset, size in _build._sections(elf):
        if name == ".interp":
            return elf[offset:offset + size].split(b"\0", 1)[0].decode()
    raise GuestBuildError("the Python binary names no dynamic loader (.interp)")
