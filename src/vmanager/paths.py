"""Where vmanager keeps things, following the XDG base directory conventions.

As root the system-wide places are used (``/var/lib/vmanager``, ``/run/vmanager``,
``/var/cache/vmanager``), as other users ``$XDG_STATE_HOME``, ``$XDG_RUNTIME_DIR``
and ``$XDG_CACHE_HOME``. ``VMANAGER_STATE_DIR``, ``VMANAGER_RUN_DIR`` and
``VMANAGER_CACHE_DIR`` override each one (tests use this to stay apart).

Root never trusts a directory another user controls (``sudo -E`` keeps the
caller's ``HOME`` and ``XDG_*``): a ``HOME``/``XDG`` cache directory is used as
root only if it exists and every component of its path is owned by root and
not writable by others (sticky directories such as ``/tmp`` excepted); otherwise
``/var/cache/vmanager`` is. A ``VMANAGER_*_DIR`` that fails the same check is
refused. Directories are made without following symlinks, owner-only (0700),
and one owned by somebody else is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from vmanager.errors import HostError


def _is_root() -> bool:
    return os.geteuid() == 0


def trusted_path(path: Path) -> str | None:
    """Why ``path`` is not safe for this user to use, or ``None`` if it is.

    Every existing component must be a directory (or the final file) owned by
    root or by us, not writable by group or others unless sticky.
    """
    me = os.geteuid()
    current = Path("/")
    for part in Path(os.path.abspath(path)).parts[1:]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{current}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.stat(current)
            except OSError:
                return f"{current} is a dangling symlink"
            if st.st_uid not in (0, me):
                return f"{current} is a symlink owned by uid {st.st_uid}"
            st = target
        if st.st_uid not in (0, me):
            return f"{current} is owned by uid {st.st_uid}"
        if st.st_mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
            return f"{current} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _override(variable: str) -> Path | None:
    value = os.environ.get(variable)
    if not value:
        return None
    path = Path(value)
    if _is_root():
        why = trusted_path(path)
        if why is not None:
            raise HostError(f"{variable}={value} is not safe for root to use: {why}")
    return path


def cache_dir() -> Path:
    """Cache for built artefacts such as the tiny guest."""
    env = _override("VMANAGER_CACHE_DIR")
    if env is not None:
        return env
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = os.environ.get("HOME")
    candidates = [Path(xdg)] if xdg else []
    candidates += [Path(home) / ".cache"] if home else [Path.home() / ".cache"]
    if not _is_root():
        return candidates[0] / "vmanager"
    for base in candidates:
        # the base must already exist (a path that does not yet could be made by anyone)
        if base.is_absolute() and base.is_dir() and trusted_path(base / "vmanager") is None:
            return base / "vmanager"
    return Path("/var/cache/vmanager")


def state_dir() -> Path:
    """Persistent state: machine definitions, disks made for machines, lab records."""
    env = _override("VMANAGER_STATE_DIR")
    if env is not None:
        return env
    if _is_root():
        return Path("/var/lib/vmanager")
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "vmanager"


def run_dir() -> Path:
    """Runtime files: per-machine sockets, pidfiles and logs. Kept short for sun_path."""
    env = _override("VMANAGER_RUN_DIR")
    if env is not None:
        return env
    if _is_root():
        return Path("/run/vmanager")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "vmanager" if xdg else Path(f"/tmp/vmanager-{os.geteuid()}")


def _own_dir(path: Path) -> None:
    """Make ``path`` a 0700 directory of ours; refuse a symlink or somebody else's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise HostError(f"{path} is not a directory (a symlink or a file is in its place); "
                        "refusing to use it")
    if st.st_uid != os.geteuid():
        raise HostError(f"{path} is owned by uid {st.st_uid}, not by this user "
                        f"({os.geteuid()}); refusing to use it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) so that only the owner can enter it (mode 0700).

    Inside vmanager's own run, state or cache directory every level is made
    0700, owned by us and not a symlink (the top directory included); the
    system directories above it (``/run``, ``/var/lib``...) are left as they are.
    """
    path = Path(os.path.abspath(path))
    top = next((t for t in (Path(os.path.abspath(d())) for d in (run_dir, state_dir, cache_dir))
                if path == t or t in path.parents), None)
    if top is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _own_dir(path)
        return path
    top.parent.mkdir(parents=True, exist_ok=True)
    _own_dir(top)
    current = top
    for part in path.relative_to(top).parts:
        current = current / part
        _own_dir(current)
    return path


def open_lock(path: Path) -> int:
    """Open (creating, 0600) a lock file without following a symlink; the descriptor.

    Refuses anything but a regular file of ours, so a lock path can never be
    turned into a write to another file.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HostError(f"cannot open lock file {path}: {exc.strerror} "
                        "(a symlink there is refused)") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise HostError(f"lock file {path} is not a regular file of this user; refusing it")
    return fd
