"""The tiny guest's vmlinux stores no zeros: QEMU maps the file and copies every stored byte."""

from __future__ import annotations

import struct

import pytest

from vmanager.errors import GuestBuildError
from vmanager.guests._build import trim_zero_tails


def _elf(segments: list[tuple[int, bytes, int]]) -> bytes:
    """An ELF64 file with PT_LOAD segments (file offset, stored bytes, memory size)."""
    phoff, n = 64, len(segments)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<Q", header, 0x28, 0x5000)  # section headers somewhere at the end
    struct.pack_into("<HHHHHH", header, 0x34, 64, 56, n, 64, 3, 2)
    out = bytearray(header) + bytearray(56 * n)
    for i, (offset, data, memsz) in enumerate(segments):
        struct.pack_into("<IIQQQQQQ", out, phoff + 56 * i, 1, 7, offset, 0x1000000 + offset,
                         0x1000000 + offset, len(data), memsz, 0x1000)
        out += bytearray(max(0, offset + len(data) - len(out)))
        out[offset:offset + len(data)] = data
    return bytes(out + bytearray(0x5000 + 3 * 64 - len(out)))


def _segments(elf: bytes) -> list[tuple[int, int, int]]:
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    n, = struct.unpack_from("<H", elf, 0x38)
    return [struct.unpack_from("<QQQ", elf, phoff + 56 * i + 8)[:1] +
            struct.unpack_from("<QQ", elf, phoff + 56 * i + 0x20) for i in range(n)]


def test_trailing_zeros_become_zero_fill_and_the_file_ends_after_the_last_byte() -> None:
    elf = _elf([(0x1000, b"code" + bytes(100) + b"end" + bytes(0x800), 0x1000),
                (0x2000, b"data" + bytes(0x2000), 0x3000)])
    trimmed = trim_zero_tails(elf)
    assert _segments(trimmed) == [(0x1000, 107, 0x1000), (0x2000, 4, 0x3000)]
    assert len(trimmed) == 0x2004
    # what a loader puts in memory is unchanged: stored bytes, then zeros to p_memsz
    for (off, size, mem), (off2, size2, mem2) in zip(_segments(elf), _segments(trimmed),
                                                      strict=True):
        assert elf[off:off + size].ljust(mem, b"\0") == trimmed[off2:off2 + size2].ljust(
            mem2, b"\0")
    # no section headers point past the new end
    assert struct.unpack_from("<Q", trimmed, 0x28) == (0,)
    assert struct.unpack_from("<HH", trimmed, 0x3C) == (0, 0)


def test_a_segment_of_zeros_stores_nothing() -> None:
    trimmed = trim_zero_tails(_elf([(0x1000, b"x", 0x10), (0x2000, bytes(0x100), 0x100)]))
    assert _segments(trimmed) == [(0x1000, 1, 0x10), (0x2000, 0, 0x100)]


@pytest.mark.parametrize("bad", [b"", b"MZ" + bytes(100), b"\x7fELF\x01\x01" + bytes(100)])
def test_not_an_elf64_file_is_refused(bad: bytes) -> None:
    with pytest.raises(GuestBuildError, match="ELF"):
        trim_zero_tails(bad)


def test_a_segment_outside_the_file_is_refused() -> None:
    elf = bytearray(_elf([(0x1000, b"x", 0x10)]))
    struct.pack_into("<Q", elf, 64 + 0x20, 1 << 40)  # p_filesz far past the end
    with pytest.raises(GuestBuildError, match="outside the file"):
        trim_zero_tails(bytes(elf))
