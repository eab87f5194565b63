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

from collections.abc import Sequence
from pathlib import Path

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


def check_trunk(trunk: str, router: str) -> None:
    """Refuse ``trunk`` if the host's default route goes out through it (or below it)."""
    from vmanager.net.labels import carries_default_route
    if carries_default_route(trunk):
        raise NetworkError(
            f"router {router!r}: trunk {trunk!r} carries this host's default route; "
            "using it would cut the host off its network and put the lab on it. Use a "
            "[hosts] entry as the outside, or set force_trunk = true on the router")
