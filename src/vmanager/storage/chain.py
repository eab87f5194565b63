"""Walking an image's backing chain without letting it escape its directories.

A qcow2 header may name any backing file (``/etc/shadow``, ``/dev/sda``, a
``json:{...}`` blockdev description, ``nbd://``...), and an external data file.
An image given to vmanager must not make QEMU read any of them. So the chain is
walked one image at a time with ``qemu-img info`` (which never opens backing
files itself), and each backing name is checked *before* qemu-img is pointed at
it: no protocol prefix, resolved (symlinks too) inside an allowed directory, a
regular file, a format vmanager supports and that the header states explicitly
(so nothing is format-probed), no loop, bounded depth.

``qemu-img info --backing-chain`` would give the same list in one call, but it
opens every backing file before anyone has looked at the names, so it is not
used for images that may be hostile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from vmanager.errors import NotFoundError, StorageError
from vmanager.storage import qemu_img
from vmanager.storage.qemu_img import ImageInfo

log = logging.getLogger(__name__)

#: Image formats vmanager opens. Others (vmdk with extents, for one) can name
#: further files in ways this module does not check.
SUPPORTED_FORMATS = frozenset({"qcow2", "raw"})
#: Longest backing chain accepted.
MAX_DEPTH = 16


class BackingEscapeError(StorageError):
    """An image names a backing or data file vmanager refuses to open.

    ``image`` is the image whose header holds the name, ``name`` the offending name.
    """

    def __init__(self, message: str, *, image: str, name: str) -> None:
        super().__init__(message)
        self.image = image
        self.name = name


def has_protocol(name: str) -> bool:
    """Whether QEMU would read ``name`` as ``protocol:...`` rather than a file path.

    Mirrors QEMU's ``path_has_protocol``: a ``:`` before any ``/``. This covers
    ``json:``, ``nbd:``, ``http:``, ``file:`` and the like.
    """
    for char in name:
        if char == "/":
            return False
        if char == ":":
            return True
    return False


def resolve_dirs(dirs: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    """Absolute, symlink-free forms of ``dirs``, duplicates dropped, order kept."""
    seen: dict[Path, None] = {}
    for d in dirs:
        seen[Path(os.path.realpath(d))] = None
    return tuple(seen)


def check_name(name: str, *, image: Path, allowed: Sequence[Path], what: str = "backing file",
               ) -> Path:
    """Check one backing/data file name found in ``image``'s header; return its real path.

    Relative names are relative to the image's directory, as QEMU reads them.
    Raises :class:`BackingEscapeError` naming the image and the name.
    """
    if not name:
        raise BackingEscapeError(f"{image}: empty {what} name", image=str(image), name=name)
    if has_protocol(name):
        raise BackingEscapeError(
            f"{image}: refusing {what} {name!r}: protocol or json: names are not allowed, "
            "only plain files", image=str(image), name=name)
    candidate = Path(name) if os.path.isabs(name) else image.parent / name
    real = Path(os.path.realpath(candidate))
    if not any(real.is_relative_to(d) for d in allowed):
        dirs = ", ".join(str(d) for d in allowed)
        raise BackingEscapeError(
            f"{image}: refusing {what} {name!r} (resolves to {real}): it lies outside the "
            f"allowed directories ({dirs}); pass its directory in allowed_dirs if you trust it",
            image=str(image), name=name)
    if not real.exists():
        raise NotFoundError(f"{image}: {what} {name!r} (resolves to {real}) does not exist")
    if not real.is_file():
        raise BackingEscapeError(f"{image}: refusing {what} {name!r}: {real} is not a "
                                 "regular file", image=str(image), name=name)
    return real


def walk(path: Path, *, fmt: str, allowed: Sequence[Path], force_share: bool = True,
         timeout: float = qemu_img.PROBE_TIMEOUT) -> ImageInfo:
    """Info of ``path`` with ``backing_chain`` filled, every element checked.

    ``allowed`` must be real (symlink-free) absolute directories (see
    :func:`resolve_dirs`). Raises :class:`NotFoundError` if an image is missing,
    :class:`BackingEscapeError` for a refused name, :class:`StorageError` for an
    unsupported or unstated format, a loop or a chain deeper than
    :data:`MAX_DEPTH`, and :class:`~vmanager.storage.qemu_img.QemuImgError` if
    qemu-img fails.
    """
    real = Path(os.path.realpath(path))
    if not real.is_file():
        if not real.exists():
            raise NotFoundError(f"disk image {path} does not exist")
        raise StorageError(f"disk image {path} is not a regular file")
    layers: list[ImageInfo] = []
    seen: set[Path] = set()
    current, current_fmt = real, fmt
    while True:
        if current in seen:
            raise StorageError(f"{path}: backing chain loops back to {current}")
        if len(layers) >= MAX_DEPTH:
            raise StorageError(f"{path}: backing chain is deeper than {MAX_DEPTH} images")
        seen.add(current)
        if current_fmt not in SUPPORTED_FORMATS:
            raise StorageError(f"{current}: format {current_fmt!r} is not supported "
                               f"(supported: {', '.join(sorted(SUPPORTED_FORMATS))})")
        layer = qemu_img.info(current, fmt=current_fmt, force_share=force_share,
                              timeout=timeout)
        if layer.data_file is not None:
            check_name(layer.data_file, image=current, allowed=allowed, what="data file")
        layers.append(layer)
        if layer.backing_file is None:
            break
        nxt = check_name(layer.backing_file, image=current, allowed=allowed)
        if not layer.backing_format:
            raise StorageError(
                f"{current}: backing file {layer.backing_file!r} has no recorded format, so "
                "QEMU would have to guess it; record it with "
                f"'qemu-img rebase -u -b {layer.backing_file} -F <format> {current}'")
        log.debug("%s: backing file %s (%s) accepted", current, nxt, layer.backing_format)
        current, current_fmt = nxt, layer.backing_format
    chain = tuple(layers[1:])
    return replace(layers[0], backing_chain=chain)
