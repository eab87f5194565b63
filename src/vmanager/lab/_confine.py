"""What a lab file may reach on the host: its own directory, and the uplink rule.

A lab file is run as root, so it must not be as powerful as root: a disk,
kernel, initrd or CD it names must lie inside the lab file's directory (after
symlinks are resolved) unless ``[lab] allow_paths`` lists the directories it
may use (``["/"]`` opts out entirely). A router whose trunk is an existing host
interface is refused when that interface carries the host's default route
(enslaving or moving the uplink cuts the host off and bridges the lab onto
its network) unless the router says ``force_trunk = true``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, NetworkError


def resolve(base: Path, value: object) -> Path:
    """``value`` (a path string) resolved against ``base``, symlinks followed."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"a path must be a non-empty string without NUL bytes, not {value!r}")
    try:
        return (base / value).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot resolve path {value!r}: {exc}") from exc


def within(path: Path, allowed: Sequence[Path]) -> bool:
    """Whether resolved ``path`` is one of ``allowed`` or inside one."""
    return any(path == a or a in path.parents for a in allowed)


def outside_message(path: Path, base: Path) -> str:
    return (f"{path} is outside the lab's directory {base}; a lab file may only use files "
            "there unless [lab] allow_paths lists the directory (allow_paths = [\"/\"] "
            "allows any path)")


def uplink_indexes(ipr: Any) -> set[int]:
    """Interfaces that carry a default route, and the bridges/bonds above them."""
    found: set[int] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in ipr.get_default_routes(family=family):
            oif = route.get_attr("RTA_OIF")
            if oif:
                found.add(int(oif))
            for hop in route.get_attr("RTA_MULTIPATH") or []:
                found.add(int(hop["oif"]))
    for index in list(found):
        links = ipr.link("get", index=index)
        master = links[0].get_attr("IFLA_MASTER") if links else None
        if master:
            found.add(int(master))
    return found


def check_trunk(trunk: str, router: str) -> None:
    """Refuse ``trunk`` if the host's default route goes out through it (or below it)."""
    from vmanager.net._netlink import rtnl
    with rtnl() as ipr:
        indexes = ipr.link_lookup(ifname=trunk)
        if not indexes:
            return  # the router reports a missing trunk itself
        index = int(indexes[0])
        below = {int(m["index"]) for m in ipr.link("dump")
                 if m.get_attr("IFLA_MASTER") == index}
        if ({index} | below) & uplink_indexes(ipr):
            raise NetworkError(
                f"router {router!r}: trunk {trunk!r} carries this host's default route; "
                "using it would cut the host off its network and put the lab on it. Use a "
                "[hosts] entry as the outside, or set force_trunk = true on the router")
