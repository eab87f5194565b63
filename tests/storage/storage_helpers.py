"""Helpers for the storage tests: real qemu-img, qemu-io and ISO tools in tmp_path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MiB = 1 << 20

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None or
                                    shutil.which("qemu-io") is None,
                                    reason="qemu-utils is not installed")


def qemu_img(*args: str) -> None:
    """Run qemu-img directly (to build images the library itself would refuse)."""
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=30)


def write_pattern(path: Path, pattern: int, offset: int = 0, length: int = 64 * 1024,
                  fmt: str = "qcow2") -> None:
    """Write ``length`` bytes of ``pattern`` into the image's guest-visible content."""
    proc = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"write -P {pattern:#x} {offset} {length}", str(path)],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    # qemu-io reports command errors on stdout/stderr but may still exit 0
    assert "error" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


def read_content(path: Path, tmp: Path, fmt: str = "qcow2") -> bytes:
    """The image's guest-visible bytes, converted to raw by qemu-img (backing included)."""
    out = tmp / f"{path.name}.readback.raw"
    qemu_img("convert", "-U", "-f", fmt, "-O", "raw", str(path), str(out))
    data = out.read_bytes()
    out.unlink()
    return data


def drop_backing_format(path: Path) -> None:
    """Blank the qcow2 header extension that records the backing format.

    QEMU 7.2 no longer writes such images, but older ones exist; this makes one.
    """
    data = bytearray(path.read_bytes()[:65536])
    magic = bytes.fromhex("e2792aca")
    at = data.find(magic, 72)
    assert at > 0, "no backing format extension found"
    data[at:at + 4] = bytes.fromhex("0badf00d")  # an unknown extension QEMU skips
    with path.open("r+b") as f:
        f.write(data)
