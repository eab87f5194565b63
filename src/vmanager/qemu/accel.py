"""Choosing the accelerator: a KVM that really runs guests, else TCG.

``/dev/kvm`` existing is not enough: a nested paravirtual KVM (``kvm_pvm``)
opens fine and then hangs ordinary guests right after real mode. So the
probe boots a 64 KiB firmware that enters protected mode and writes to
``isa-debug-exit``; a KVM that gets there within the time limit is usable.
The verdict is cached per host boot and QEMU binary.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from vmanager import paths
from vmanager.errors import ConfigError, HostError

log = logging.getLogger(__name__)

Accel = Literal["kvm", "tcg"]
ACCEL_CHOICES = ("auto", "kvm", "tcg")

# Real mode -> lgdt -> protected mode -> "out 0xf4, 0x31" (QEMU exits with 99).
_PROBE_CODE = bytes.fromhex(
    "fa2e660f011648000f20c06683c8010f22c066ea1a000f00080066b810008ed88ed0b831000000e6f4f4ebfd"
    "8db400000000000000000000ffff0000009acf00ffff00000092cf00170030000f")
_PROBE_RESET = bytes.fromhex("ea000000f0")  # ljmp F000:0000 at the reset vector
_PROBE_EXIT = 99
_PROBE_TIMEOUT = 3.0


def probe_rom() -> bytes:
    """The 64 KiB probe firmware."""
    rom = bytearray(0x10000)
    rom[:len(_PROBE_CODE)] = _PROBE_CODE
    rom[0xFFF0:0xFFF0 + len(_PROBE_RESET)] = _PROBE_RESET
    return bytes(rom)


def _cache_key(qemu: str) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    try:
        st = os.stat(qemu)
        binary = f"{st.st_ino}-{st.st_mtime_ns}"
    except OSError:
        binary = qemu
    return f"{boot_id}:{binary}"


def kvm_usable(qemu: str) -> bool:
    """Whether KVM runs an ordinary guest here (probed, cached for this boot)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cache = paths.run_dir() / "accel.json"
    key = _cache_key(qemu)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return bool(cached["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    ok = _probe(qemu)
    try:
        paths.private_dir(cache.parent)
        cache.write_text(json.dumps({"key": key, "kvm": ok}))
    except OSError as exc:
        log.debug("could not cache the accelerator probe: %s", exc)
    return ok


def _probe(qemu: str) -> bool:
    directory = paths.private_dir(paths.run_dir())
    with tempfile.NamedTemporaryFile(prefix=".probe-", suffix=".rom", dir=directory) as rom:
        rom.write(probe_rom())
        rom.flush()
        argv = [qemu, "-accel", "kvm", "-machine", "pc", "-nodefaults", "-no-user-config",
                "-display", "none", "-m", "16", "-bios", rom.name,
                "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=_PROBE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            log.info("KVM present but a probe guest hung: it cannot run ordinary guests here")
            return False
        except OSError:
            return False
    ok = proc.returncode == _PROBE_EXIT
    if not ok:
        log.info("KVM probe failed (status %s): %s", proc.returncode,
                 proc.stderr.decode(errors="replace").strip()[-300:])
    return ok


def choose(requested: str, qemu: str) -> Accel:
    """Resolve ``auto``/``kvm``/``tcg`` (or ``$VMANAGER_ACCEL``) to the accelerator to use.

    ``kvm`` forced on a host without a working KVM raises :class:`HostError`.
    """
    if requested == "auto":
        requested = os.environ.get("VMANAGER_ACCEL", "auto") or "auto"
    if requested not in ACCEL_CHOICES:
        raise ConfigError(f"accel {requested!r} is not one of {', '.join(ACCEL_CHOICES)}")
    if requested == "tcg":
        return "tcg"
    if requested == "kvm":
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise HostError("accel='kvm' was asked for but /dev/kvm is missing or not "
                            "accessible; use accel='tcg' or 'auto'")
        return "kvm"
    return "kvm" if kvm_usable(qemu) else "tcg"
