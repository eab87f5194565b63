"""Finding UEFI firmware (OVMF) the way libvirt does: QEMU's firmware descriptors.

Distributions describe the firmware they ship in JSON files (QEMU's
``docs/interop/firmware.json``) under ``/usr/share/qemu/firmware``, which
``/etc/qemu/firmware`` and ``$XDG_CONFIG_HOME/qemu/firmware`` override file
by file name; the files are tried in name order (``50-...`` before
``60-...``). :func:`find_uefi` picks the first descriptor of a UEFI build for
x86_64 that maps to flash, fits the machine type and needs neither Secure
Boot nor SMM, and whose files exist. Without descriptors it tries the paths
Debian, Fedora and Arch use. Reading descriptors is all it does: no file is
made or changed here.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, HostError

#: Descriptor directories, lowest priority first (a later one's file of the same name wins).
DESCRIPTOR_DIRS = (Path("/usr/share/qemu/firmware"), Path("/etc/qemu/firmware"))
#: (code, vars template) pairs tried when no descriptor fits: Debian/Ubuntu, Fedora, Arch.
KNOWN_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
)
#: Features that a plain UEFI boot cannot give (they need SMM or enrolled keys).
_UNWANTED = {"requires-smm", "secure-boot", "enrolled-keys", "amd-sev-es", "amd-sev-snp",
             "intel-tdx"}
#: Descriptors larger than this are not firmware descriptors.
_MAX_DESCRIPTOR = 64 << 10
#: Machine types QEMU resolves to a versioned one (the descriptors name those).
_ALIASES = {"pc": "pc-i440fx-*", "q35": "pc-q35-*"}
#: Machine types with no pflash (they boot qboot/SeaBIOS or a kernel only).
_NO_FLASH = ("microvm", "isapc", "none")


@dataclass(frozen=True)
class UefiFirmware:
    """A UEFI build: its code (read-only flash) and the template of its variable store."""

    code: Path
    vars_template: Path
    #: where it was found: a descriptor's path, or ``"known path"``
    source: str


def descriptor_dirs() -> list[Path]:
    """Where descriptors are looked for, lowest priority first."""
    dirs = list(DESCRIPTOR_DIRS)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(Path(config) / "qemu" / "firmware")
    return dirs


def _descriptors(dirs: list[Path]) -> list[Path]:
    by_name: dict[str, Path] = {}
    for directory in dirs:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix == ".json":
                by_name[entry.name] = entry  # a later directory overrides
    return [by_name[name] for name in sorted(by_name)]


def _matches_machine(targets: Any, machine_type: str) -> bool:
    pattern_of = _ALIASES.get(machine_type, machine_type)
    for target in targets if isinstance(targets, list) else ():
        if not isinstance(target, dict) or target.get("architecture") != "x86_64":
            continue
        for pattern in target.get("machines") or ():
            if not isinstance(pattern, str):
                continue
            if fnmatch.fnmatchcase(pattern_of, pattern) or \
                    fnmatch.fnmatchcase(machine_type, pattern) or pattern_of == pattern:
                return True
    return False


def parse_descriptor(data: Any, machine_type: str) -> tuple[str, str] | None:
    """(code, vars template) of a descriptor that fits a plain UEFI boot, else ``None``."""
    if not isinstance(data, dict) or "uefi" not in (data.get("interface-types") or ()):
        return None
    features = data.get("features") or []
    if not isinstance(features, list) or _UNWANTED & {f for f in features if isinstance(f, str)}:
        return None
    if not _matches_machine(data.get("targets"), machine_type):
        return None
    mapping = data.get("mapping")
    if not isinstance(mapping, dict) or mapping.get("device") != "flash":
        return None
    if mapping.get("mode", "split") != "split":
        return None
    code, nvram = mapping.get("executable"), mapping.get("nvram-template")
    if not isinstance(code, dict) or not isinstance(nvram, dict):
        return None
    if code.get("format", "raw") != "raw" or nvram.get("format", "raw") != "raw":
        return None
    code_file, vars_file = code.get("filename"), nvram.get("filename")
    if not isinstance(code_file, str) or not isinstance(vars_file, str):
        return None
    return code_file, vars_file


def find_uefi(machine_type: str = "pc", *, dirs: list[Path] | None = None,
              known: tuple[tuple[str, str], ...] | None = None) -> UefiFirmware:
    """The UEFI firmware for ``machine_type``.

    Raises :class:`ConfigError` for a machine type without flash (``microvm``)
    and :class:`HostError` naming the files looked for when none is installed
    (on Debian: ``apt-get install ovmf``).
    """
    if machine_type in _NO_FLASH or machine_type.startswith("microvm"):
        raise ConfigError(f"machine type {machine_type!r} has no flash for UEFI firmware; "
                          "use firmware='bios' or machine_type 'pc' or 'q35'")
    missing: list[str] = []
    for path in _descriptors(descriptor_dirs() if dirs is None else dirs):
        try:
            if path.stat().st_size > _MAX_DESCRIPTOR:
                continue
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pair = parse_descriptor(data, machine_type)
        if pair is None:
            continue
        absent = [f for f in pair if not Path(f).is_file()]
        if absent:
            missing += absent
            continue
        return UefiFirmware(Path(pair[0]), Path(pair[1]), str(path))
    for code, template in KNOWN_PAIRS if known is None else known:
        if Path(code).is_file() and Path(template).is_file():
            return UefiFirmware(Path(code), Path(template), "known path")
        missing += [f for f in (code, template) if not Path(f).is_file()]
    looked = ", ".join(dict.fromkeys(missing))
    raise HostError(f"firmware='uefi' needs UEFI firmware (OVMF) for machine type "
                    f"{machine_type!r}, and none is installed: missing {looked} (on Debian: "
                    "apt-get install ovmf)")
