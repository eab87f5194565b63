"""Input validation shared by every layer: names, sizes, MAC addresses.

Each function returns the normalised value or raises :class:`ConfigError`
naming what was wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vmanager.errors import ConfigError

#: Linux limits interface names to IFNAMSIZ-1 = 15 bytes.
IFNAME_MAX = 15
#: Machine and namespace names: a safe identifier usable in paths and QEMU options.
NAME_MAX = 32

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def name(value: object, *, what: str = "name", max_len: int = NAME_MAX) -> str:
    """Check a machine/switch/namespace name: letters, digits, ``_.-``, no path tricks.

    >>> name("web-1")
    'web-1'
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {type(value).__name__}: {value!r}")
    if not value:
        raise ConfigError(f"{what} must not be empty")
    if len(value) > max_len:
        raise ConfigError(f"{what} {value!r} is {len(value)} characters long; "
                          f"at most {max_len} are allowed")
    if value in (".", "..") or not _NAME_RE.match(value):
        raise ConfigError(f"{what} {value!r} is not a safe identifier: use letters, digits "
                          "and '_', '.', '-', starting with a letter or digit")
    return value


def ifname(value: object, *, what: str = "interface name") -> str:
    """Check a kernel interface name (at most 15 bytes, no '/', no spaces)."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {type(value).__name__}: {value!r}")
    if not value:
        raise ConfigError(f"{what} must not be empty")
    # characters first: a lone surrogate (from a file name) cannot be encoded
    if value in (".", "..") or not _IFNAME_RE.match(value):
        raise ConfigError(f"{what} {value!r} has characters the kernel or vmanager refuses; "
                          "use letters, digits, '_', '.', '-'")
    if len(value) > IFNAME_MAX:  # ASCII only now: characters are bytes
        raise ConfigError(f"{what} {value!r} is longer than the kernel's limit of "
                          f"{IFNAME_MAX} bytes")
    return value


def size(value: object, *, what: str = "size", default_unit: str = "") -> int:
    """Parse a size in bytes: an int, or a string such as ``"10G"``, ``"512M"``, ``"1.5GiB"``.

    ``default_unit`` applies to bare numbers ("M" for memory given in MiB).

    >>> size("1G")
    1073741824
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of bytes or a string like '10G', not {value!r}")
    if isinstance(value, int):
        result = value * _UNITS[default_unit.upper()[:1]]
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m:
            raise ConfigError(f"{what} {value!r} does not parse; use a number with an "
                              "optional unit K, M, G or T (e.g. '10G')")
        number, unit = m.group(1), (m.group(2) or default_unit).upper()[:1]
        result = int(float(number) * _UNITS[unit])
    else:
        raise ConfigError(f"{what} must be a number or a string like '10G', "
                          f"not {type(value).__name__}")
    if result <= 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    if result > 1 << 50:
        raise ConfigError(f"{what} {value!r} is larger than vmanager accepts (1 PiB)")
    return result


def memory_mib(value: object, *, what: str = "memory") -> int:
    """Memory in MiB: an int is MiB (the seed's meaning), a string may carry a unit."""
    nbytes = size(value, what=what, default_unit="M")
    if nbytes % (1 << 20):
        raise ConfigError(f"{what} {value!r} is not a whole number of MiB")
    mib = nbytes >> 20
    if mib < 16:
        raise ConfigError(f"{what} {value!r} is too small: a guest needs at least 16 MiB")
    return mib


def mac(value: object, *, what: str = "MAC address") -> str:
    """Check a unicast MAC address and return it in lower case."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string like '52:54:00:12:34:56', got {value!r}")
    lowered = value.lower()
    if not _MAC_RE.match(lowered):
        raise ConfigError(f"{what} {value!r} is not of the form 52:54:00:12:34:56")
    if int(lowered[:2], 16) & 1:
        raise ConfigError(f"{what} {value!r} is a multicast address; a NIC needs a unicast one")
    return lowered


def path(value: object, *, what: str = "path") -> Path:
    """Check a file path: a non-empty str or PathLike without NUL bytes; return it absolute."""
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{what} must be a path, not {type(value).__name__}: {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{what} must be a non-empty path, got {value!r}")
    if "\0" in text:
        raise ConfigError(f"{what} {text!r} contains a NUL byte")
    return Path(os.path.abspath(text))


def index(value: object, *, what: str = "index") -> int:
    """A non-negative integer (``bool`` is refused: ``True`` is not an index)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def snapshot_name(value: object, *, max_len: int) -> str:
    """A snapshot name QEMU cannot take for a snapshot id (not all digits)."""
    checked = name(value, what="snapshot name", max_len=max_len)
    if checked.isdigit():
        # QEMU's monitor looks snapshots up by id before name; an all-digit name
        # could silently pick a different snapshot there.
        raise ConfigError(f"snapshot name {checked!r} is all digits and could be taken for a "
                          "snapshot id; add a letter")
    return checked
