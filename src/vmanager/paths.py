"""Where vmanager keeps things, following the XDG base directory conventions.

As root the system-wide places are used (``/var/lib/vmanager``, ``/run/vmanager``,
``/var/cache/vmanager``), as other users ``$XDG_STATE_HOME``, ``$XDG_RUNTIME_DIR``
and ``$XDG_CACHE_HOME``. ``VMANAGER_STATE_DIR``, ``VMANAGER_RUN_DIR`` and
``VMANAGER_CACHE_DIR`` override each one (tests use this to stay apart).
"""

from __future__ import annotations

import os
from pathlib import Path


def _is_root() -> bool:
    return os.geteuid() == 0


def cache_dir() -> Path:
    """Cache for built artefacts such as the tiny guest."""
    env = os.environ.get("VMANAGER_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "vmanager"
    return Path.home() / ".cache" / "vmanager"


def state_dir() -> Path:
    """Persistent state: machine definitions, disks made for machines, lab records."""
    env = os.environ.get("VMANAGER_STATE_DIR")
    if env:
        return Path(env)
    if _is_root():
        return Path("/var/lib/vmanager")
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "vmanager"


def run_dir() -> Path:
    """Runtime files: per-machine sockets, pidfiles and logs. Kept short for sun_path."""
    env = os.environ.get("VMANAGER_RUN_DIR")
    if env:
        return Path(env)
    if _is_root():
        return Path("/run/vmanager")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "vmanager" if xdg else Path(f"/tmp/vmanager-{os.geteuid()}")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) so that only the owner can enter it (mode 0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
