"""Fast checks of the Python guest builder's pieces (no download, no QEMU)."""

from __future__ import annotations

import sys
from pathlib import Path

from vmanager.guests import _build
from vmanager.guests._elf import interpreter as _interpreter
from vmanager.guests._elf import needed as _needed
from vmanager.guests.pyguest import _read_cpio


def test_cpio_reader_reads_back_what_the_writer_wrote() -> None:
    cpio = _build.Cpio()
    cpio.file("lib/modules/v/modules.dep", b"a.ko:\n")
    cpio.symlink("usr/bin/python3", "python3.11")
    cpio.file("odd", b"x" * 5, 0o755)
    files = _read_cpio(cpio.getvalue())
    assert files == {"lib/modules/v/modules.dep": b"a.ko:\n", "odd": b"xxxxx"}


def test_elf_dependencies_of_this_interpreter() -> None:
    elf = Path(sys.executable).resolve().read_bytes()
    assert "libc.so.6" in _needed(elf)
    assert _interpreter(elf).startswith("/lib")
