"""Disk images of real operating systems, built from distribution packages.

``build("debian-12")`` makes a qcow2 disk of Debian 12 "bookworm" with systemd,
Debian's cloud kernel, GRUB (booting from the disk itself under SeaBIOS, and
under UEFI firmware such as OVMF: ``Machine(..., firmware="uefi")``), the
QEMU guest agent, cloud-init (NoCloud) and OpenSSH, from Debian's archive. The
result is cached under ``$XDG_CACHE_HOME/vmanager/images`` (as root
``~/.cache/vmanager/images`` unless ``VMANAGER_CACHE_DIR`` says otherwise), keyed
by everything that goes into it (the builder's own code included); a second call
returns at once. Cached images are never deleted by vmanager, since overlays name
them as their backing file; ``rebuild=True`` replaces one (recreate overlays made
on it).

Example::

    from vmanager import Harddrive, Machine, images

    base = images.build("debian-12")                   # ~1 min the first time
    disk = Harddrive("web.qcow2", backing=base.path)   # an overlay per machine
    disk.create()
    with Machine("web", memory=1024, harddrives=disk) as m:
        m.start_vm()
        m.wait_ready()                                  # the guest agent answers
        print(m.succeed("systemctl is-system-running --wait"))

Building needs root, ``mmdebstrap``, ``sfdisk``, ``mke2fs``, ``mkfs.fat``
(dosfstools), ``mcopy`` (mtools) and the host's apt
sources (or ``mirror=``) reaching a Debian archive.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmanager import paths, validate
from vmanager.errors import ConfigError, GuestBuildError
from vmanager.images import _disk, _esp, debian

log = logging.getLogger(__name__)

#: Images :func:`build` knows: name -> (Debian suite, description).
DISTRIBUTIONS: dict[str, tuple[str, str]] = {
    "debian-12": ("bookworm", "Debian 12 (bookworm)"),
}
#: Default disk size (the qcow2 file holds only what is used, ~1 GB).
DEFAULT_SIZE = 4 << 30
_MIN_SIZE = 1 << 30
_MAX_SIZE = 2 << 40


@dataclass(frozen=True)
class Image:
    """A built image: a qcow2 file and what went into it."""

    name: str
    path: Path
    size: int
    packages: tuple[str, ...]
    root_password: bool
    built_seconds: float | None
    cached: bool
    #: Firmware it boots under: ``Machine(..., firmware=...)`` takes either.
    firmware: tuple[str, ...] = ("bios", "uefi")

    @property
    def format(self) -> str:
        """Always ``"qcow2"``."""
        return "qcow2"


def _key(name: str, size: int, packages: Sequence[str], root_password: str | None,
         mirror: str | None, hostname: str) -> str:
    h = hashlib.sha256()
    for module in (debian, _disk, _esp):
        h.update(Path(module.__file__ or "").read_bytes())
    h.update(json.dumps([name, size, sorted(packages), mirror, hostname]).encode())
    # The password itself never reaches the cache's file names or manifest.
    h.update(hashlib.sha256((root_password or "").encode()).digest() if root_password
             is not None else b"locked")
    return h.hexdigest()[:16]


def build(name: str = "debian-12", path: str | Path | None = None, *,
          size: int | str = DEFAULT_SIZE, packages: Sequence[str] = (),
          root_password: str | None = None, mirror: str | None = None,
          hostname: str = "debian", rebuild: bool = False,
          progress: Callable[[str], None] | None = None) -> Image:
    """Build (or take from the cache) image ``name``; copy it to ``path`` if given.

    ``size`` is the virtual disk size (bytes or ``"8G"``); ``packages`` are extra
    Debian packages; ``root_password`` sets root's password (``None``: root cannot
    log in with a password; use cloud-init or the guest agent); ``mirror`` is a
    Debian archive URL instead of the host's apt sources. ``progress`` receives
    one line per step.

    Raises :class:`ConfigError` for an unknown name or a bad option and
    :class:`GuestBuildError` when the archive cannot be reached or a build tool
    fails; a failed build leaves neither files nor mounts behind.
    """
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"unknown image {name!r}; known: {', '.join(sorted(DISTRIBUTIONS))}")
    size_b = validate.size(size, what="image size")
    if not _MIN_SIZE <= size_b <= _MAX_SIZE or size_b % (1 << 20):
        raise ConfigError(f"image size must be whole MiB from 1 GiB to 2 TiB, got {size!r}")
    if isinstance(packages, str):
        raise ConfigError("packages must be a list of package names, not one string")
    try:
        extra = debian.check_packages(list(packages))
    except GuestBuildError as exc:
        raise ConfigError(str(exc)) from None
    if root_password is not None and (not isinstance(root_password, str) or
                                      not root_password or "\n" in root_password):
        raise ConfigError("root_password must be a non-empty one-line string or None")
    if mirror is not None and not (isinstance(mirror, str) and
                                   mirror.startswith(("http://", "https://", "file:/"))):
        raise ConfigError(f"mirror must be an http(s):// or file:/ URL, got {mirror!r}")
    hostname = validate.name(hostname, what="hostname")
    say = progress or (lambda _msg: None)
    suite = DISTRIBUTIONS[name][0]

    cache = paths.private_dir(paths.cache_dir() / "images")
    key = _key(name, size_b, extra, root_password, mirror, hostname)
    image_path = cache / f"{name}-{key}.qcow2"
    manifest = image_path.with_suffix(".json")
    with (cache / ".lock").open("w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        _prune(cache)
        cached = image_path.is_file() and manifest.is_file() and not rebuild
        seconds: float | None = None
        if cached:
            say(f"{name}: using the cached image {image_path}")
            try:
                seconds = float(json.loads(manifest.read_text())["seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                seconds = None
        else:
            started = time.monotonic()
            manifest.unlink(missing_ok=True)
            # build_disk replaces the image only once the new one is complete.
            debian.build_disk(suite, image_path, size=size_b, packages=extra,
                              root_password=root_password, mirror=mirror,
                              hostname=hostname, say=say, workdir=cache)
            seconds = time.monotonic() - started
            manifest.write_text(json.dumps({"name": name, "packages": sorted(extra),
                                            "size": size_b, "seconds": round(seconds, 1),
                                            "root_password": root_password is not None,
                                            "built": time.time()}, indent=2))
            say(f"{name}: built in {seconds:.0f} s ({image_path.stat().st_size >> 20} MiB)")
    result = image_path
    if path is not None:
        target = validate.path(path, what="image path")
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            shutil.copyfile(image_path, tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        result = target
    return Image(name=name, path=result, size=size_b,
                 packages=tuple(debian.BASE_PACKAGES) + tuple(extra),
                 root_password=root_password is not None, built_seconds=seconds, cached=cached)


def _prune(cache: Path) -> None:
    """Remove the scratch directories of killed builds.

    Images themselves are never removed here: overlays made on a cached image
    name it as their backing file.
    """
    # Builds run only under the cache's lock, which the caller holds: any scratch
    # directory is what a killed build left.
    for scratch in cache.glob(".imgbuild-*"):
        if not _disk.mounts_under(scratch):
            shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["DEFAULT_SIZE", "DISTRIBUTIONS", "Image", "build"]
