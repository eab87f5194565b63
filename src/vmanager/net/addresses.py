"""Values a NIC is described by: stable and random MAC addresses, the MTU.

Pure functions, used by the NICs and by lab files (which derive each machine's
MACs before anything is made).
"""

from __future__ import annotations

import hashlib
import os

from vmanager import validate
from vmanager.errors import ConfigError


def stable_mac(machine_name: str, index: int) -> str:
    """A locally administered unicast MAC derived from ``(machine_name, index)``.

    The same machine and index always give the same address, so a guest keeps
    its interface names and DHCP leases across restarts. The prefix ``52:54``
    is QEMU's usual one (locally administered, unicast).

    >>> stable_mac("web", 0)
    '52:54:e3:cd:a8:ac'
    """
    validate.name(machine_name, what="machine name")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"NIC index must be a non-negative integer, got {index!r}")
    digest = hashlib.sha256(f"{machine_name}/{index}".encode()).digest()
    return "52:54:" + ":".join(f"{b:02x}" for b in digest[:4])


def validate_mtu(value: object) -> int:
    """An MTU in bytes: 68 (IPv4's minimum) to 65535.

    >>> validate_mtu(9000)
    9000
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise ConfigError(f"mtu: must be 68 to 65535 bytes, not {value!r}")
    return value


def random_mac() -> str:
    """A random locally administered unicast MAC with the ``52:54`` prefix."""
    return "52:54:" + ":".join(f"{b:02x}" for b in os.urandom(4))
