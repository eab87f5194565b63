"""``Harddrive``: a qcow2 (or raw) disk image, created and changed offline with qemu-img.

Example::

    base = Harddrive("/srv/vm/base.qcow2")
    base.create("10G")
    disk = Harddrive("/srv/vm/web.qcow2", backing=base)   # an overlay on base
    disk.create()
    disk.create_snapshot("clean")
    ...
    disk.apply_snapshot("clean")

Every call that opens the image first walks its backing chain and refuses a
backing or data file outside the allowed directories (see
:mod:`vmanager.storage.chain`). While a running machine has the disk attached
(:meth:`Harddrive.attach`), offline changes are refused and
:attr:`Harddrive.snapshots` asks the machine instead of qemu-img.
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from vmanager import validate
from vmanager.errors import ConfigError, NotFoundError, StateError, StorageError
from vmanager.qemu import blockdev as _blockdev
from vmanager.storage import chain, qemu_img
from vmanager.storage.qemu_img import ImageInfo, SnapshotInfo, StrPath
from vmanager.storage.users import DiskUser

log = logging.getLogger(__name__)

SizeLike = int | str

#: Snapshot names longer than this are refused (qcow2 itself allows 64 KiB).
SNAPSHOT_NAME_MAX = 128


class Harddrive:
    """A disk image file for a machine.

    ``size`` is used by :meth:`create` when it is called without one.
    ``format`` is ``"qcow2"`` (snapshots, overlays) or ``"raw"``. ``backing`` makes
    :meth:`create` build an overlay on another image (a path or a
    ``Harddrive``); ``backing_format`` names its format, which is otherwise taken
    from the ``Harddrive`` or read from the file. ``allowed_dirs`` are the
    directories a backing chain may reach besides the image's own directory
    (and ``backing``'s). ``readonly`` attaches the disk read-only and refuses
    every change to it. ``interface`` is ``"virtio"``, ``"ide"`` or ``"scsi"``.

    Construction does no I/O; raises :class:`ConfigError` for a bad option.
    """

    def __init__(self, path: StrPath, *, size: SizeLike | None = None, format: str = "qcow2",
                 backing: StrPath | Harddrive | None = None, backing_format: str | None = None,
                 allowed_dirs: Iterable[StrPath] | None = None, readonly: bool = False,
                 interface: str = "virtio") -> None:
        self.path = validate.path(path, what="disk image path")
        self.size = validate.size(size, what="disk size") if size is not None else None
        if format not in chain.SUPPORTED_FORMATS:
            raise ConfigError(f"disk format {format!r} is not supported; use one of "
                              f"{', '.join(sorted(chain.SUPPORTED_FORMATS))}")
        self.format = format
        if interface not in _blockdev.DISK_DEVICES:
            raise ConfigError(f"disk interface {interface!r} is not supported; use one of "
                              f"{', '.join(_blockdev.DISK_DEVICES)}")
        if readonly and interface == "ide":
            raise ConfigError("QEMU cannot attach a read-only disk as ide-hd; "
                              "use interface='virtio' or 'scsi'")
        self.interface = interface
        self.readonly = readonly
        if backing is not None and format != "qcow2":
            raise ConfigError(f"only a qcow2 image can have a backing file, not {format}")
        if backing_format is not None and backing_format not in chain.SUPPORTED_FORMATS:
            raise ConfigError(f"backing format {backing_format!r} is not supported")
        self.backing: Path | None
        if isinstance(backing, Harddrive):
            self.backing = backing.path
            backing_format = backing_format or backing.format
        elif backing is not None:
            self.backing = Path(os.path.abspath(backing))
        else:
            self.backing = None
        self.backing_format = backing_format
        self._extra_dirs = [Path(os.path.abspath(d)) for d in (allowed_dirs or ())]
        self._user: DiskUser | None = None

    def __repr__(self) -> str:
        return f"Harddrive({str(self.path)!r}, format={self.format!r})"

    # -- where the image may reach ---------------------------------------------------

    @property
    def allowed_dirs(self) -> tuple[Path, ...]:
        """Real directories a backing chain may use: the image's own, ``backing``'s,
        and those passed in ``allowed_dirs``."""
        dirs = [self.path.parent, *self._extra_dirs]
        if self.backing is not None:
            dirs.append(self.backing.parent)
        return chain.resolve_dirs(dirs)

    @property
    def exists(self) -> bool:
        """Whether the image file exists."""
        return self.path.is_file()

    # -- live use by a machine -------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Whether a running machine has this disk attached."""
        return self._user is not None

    def attach(self, user: DiskUser) -> None:
        """Mark the disk as used by a running machine (called by the machine).

        Raises :class:`StateError` if another machine already uses it.
        """
        if self._user is not None and self._user is not user:
            raise StateError(f"{self.path} is already attached to machine {self._user.name}",
                             state="attached", required="detached")
        self._user = user

    def detach(self, user: DiskUser) -> None:
        """Undo :meth:`attach`; detaching a machine that is not attached does nothing."""
        if self._user is user:
            self._user = None

    def _require_offline(self, action: str) -> None:
        if self._user is not None:
            raise StateError(f"cannot {action} {self.path} offline while machine "
                             f"{self._user.name} uses it; use the machine's own call",
                             state="attached", required="detached")
        if self.readonly:
            raise StorageError(f"cannot {action} {self.path}: it was opened readonly")

    # -- reading -------------------------------------------------------------------

    def info(self) -> ImageInfo:
        """What qemu-img says about the image, with its backing chain checked and filled.

        Reads with ``-U`` so it works while a machine runs. Raises
        :class:`NotFoundError` if the image (or a backing file) is missing,
        :class:`~vmanager.storage.chain.BackingEscapeError` if its chain leaves the
        allowed directories, :class:`StorageError` for other image trouble.
        """
        return chain.walk(self.path, fmt=self.format, allowed=self.allowed_dirs)

    @property
    def snapshots(self) -> list[SnapshotInfo]:
        """The image's internal snapshots, oldest first.

        From the running machine (QMP) while one has the disk attached, else from
        ``qemu-img info``. A raw image has none.
        """
        if self._user is not None:
            return list(self._user.disk_snapshots(self))
        return list(self.info().snapshots)

    # -- changing offline ------------------------------------------------------------

    def check(self) -> qemu_img.CheckResult:
        """Check the image's consistency (``qemu-img check``); the disk must not be in use."""
        if self._user is not None:
            raise StateError(f"cannot check {self.path} while machine {self._user.name} uses it",
                             state="attached", required="detached")
        return qemu_img.check(self.path, fmt=self.format)

    def create(self, size: SizeLike | None = None, *, overwrite: bool = False) -> ImageInfo:
        """Create the image: empty of ``size`` (or the constructor's), or an overlay.

        With ``backing`` the size defaults to the backing image's. The backing
        image's chain is checked like any other. Raises :class:`StorageError` if
        the file exists and ``overwrite`` is false, :class:`ConfigError` for a bad
        or missing size, :class:`NotFoundError` for a missing backing image.
        """
        nbytes = validate.size(size, what="disk size") if size is not None else self.size
        if self.exists:
            if not overwrite:
                raise StorageError(f"{self.path} already exists; pass overwrite=True to "
                                   "replace it")
            self._require_offline("overwrite")
        elif self._user is not None:
            self._require_offline("create")
        backing: str | None = None
        backing_fmt: str | None = None
        if self.backing is not None:
            base = self._backing_info()
            backing, backing_fmt = base.filename, base.format
            if nbytes is None:
                nbytes = base.virtual_size
        if nbytes is None:
            raise ConfigError(f"creating {self.path} needs a size (e.g. '10G')")
        if not self.path.parent.is_dir():
            raise NotFoundError(f"directory {self.path.parent} for disk image does not exist")
        self._replace_with(lambda tmp: qemu_img.create(
            tmp, fmt=self.format, size=nbytes, backing=backing, backing_fmt=backing_fmt),
            overwrite=overwrite)
        log.info("created %s (%s, %d bytes%s)", self.path, self.format, nbytes,
                 f", backing {backing}" if backing else "")
        return self.info()

    def _backing_info(self) -> ImageInfo:
        assert self.backing is not None
        allowed = self.allowed_dirs
        real = chain.check_name(str(self.backing), image=self.path, allowed=allowed)
        fmt = self.backing_format
        if fmt is None:
            # The user named this file; its probed format is then enforced and its
            # own chain checked, so a disguised raw image gains nothing.
            fmt = qemu_img.info(real, fmt=None).format
            log.debug("backing image %s probed as %s", real, fmt)
        return chain.walk(real, fmt=fmt, allowed=allowed)

    def _replace_with(self, build: _Builder, *, overwrite: bool) -> None:
        # Build beside the target and rename, so a failure leaves the old image (or
        # nothing) and never a half-written file under the real name.
        fd, tmpname = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                       dir=self.path.parent)
        os.close(fd)
        tmp = Path(tmpname)
        try:
            build(tmp)
            if overwrite and self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o7777)
                os.replace(tmp, self.path)
            else:
                try:
                    os.link(tmp, self.path)  # fails if someone created it meanwhile
                except FileExistsError as exc:
                    raise StorageError(f"{self.path} already exists") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def resize(self, size: SizeLike, *, shrink: bool = False) -> ImageInfo:
        """Change the virtual size offline to ``size``.

        Shrinking loses data at the end of the disk, so it is refused with a
        :class:`StorageError` unless ``shrink=True``. Raises :class:`ConfigError`
        for a bad size, :class:`StateError` while a machine uses the disk.
        """
        nbytes = validate.size(size, what="disk size")
        self._require_offline("resize")
        current = self.info()
        if nbytes == current.virtual_size:
            return current
        smaller = nbytes < current.virtual_size
        if smaller and not shrink:
            raise StorageError(
                f"refusing to shrink {self.path} from {current.virtual_size} to {nbytes} "
                "bytes: data past the new end would be lost; pass shrink=True to do it anyway")
        qemu_img.resize(self.path, nbytes, fmt=self.format, shrink=smaller)
        log.info("resized %s from %d to %d bytes", self.path, current.virtual_size, nbytes)
        return self.info()

    def create_snapshot(self, name: str) -> SnapshotInfo:
        """Take an internal disk-only snapshot called ``name`` (qcow2, offline).

        Raises :class:`ConfigError` for a bad name, :class:`StorageError` if one of
        that name exists or the image is not qcow2.
        """
        name = validate.snapshot_name(name, max_len=SNAPSHOT_NAME_MAX)
        current = self._snapshot_target("snapshot")
        if current.snapshot(name) is not None:
            raise StorageError(f"{self.path} already has a snapshot called {name!r}")
        qemu_img.snapshot(self.path, "create", name, fmt=self.format)
        made = self.info().snapshot(name)
        if made is None:
            raise StorageError(f"qemu-img reported success but {self.path} has no snapshot "
                               f"{name!r}")
        log.info("%s: created snapshot %s", self.path, name)
        return made

    def apply_snapshot(self, name: str) -> None:
        """Revert the disk's content to snapshot ``name`` (offline).

        Raises :class:`NotFoundError` naming the snapshots that do exist.
        """
        name = validate.snapshot_name(name, max_len=SNAPSHOT_NAME_MAX)
        self._require_snapshot(self._snapshot_target("apply a snapshot to"), name)
        qemu_img.snapshot(self.path, "apply", name, fmt=self.format)
        log.info("%s: applied snapshot %s", self.path, name)

    def delete_snapshot(self, name: str) -> None:
        """Delete snapshot ``name`` (offline). Raises :class:`NotFoundError` if absent."""
        name = validate.snapshot_name(name, max_len=SNAPSHOT_NAME_MAX)
        self._require_snapshot(self._snapshot_target("delete a snapshot of"), name)
        qemu_img.snapshot(self.path, "delete", name, fmt=self.format)
        log.info("%s: deleted snapshot %s", self.path, name)

    def wipe(self, snapshots_only: bool = False) -> ImageInfo:
        """Throw content away (offline).

        With ``snapshots_only`` every internal snapshot is deleted and the current
        content kept. Otherwise the image is recreated empty with the same format,
        virtual size, cluster size, backing file and file mode (an overlay goes back
        to showing its backing image); its snapshots go too.
        """
        self._require_offline("wipe")
        current = self.info()
        if snapshots_only:
            # qemu-img deletes by name, one entry per call; names may repeat.
            for snap in current.snapshots:
                qemu_img.snapshot(self.path, "delete", snap.name, fmt=self.format)
            log.info("%s: deleted %d snapshots", self.path, len(current.snapshots))
            return self.info()
        # The backing name is kept as recorded (relative stays relative); the chain
        # check above accepted it, and the new file lives in the same directory.
        options = ({"cluster_size": str(current.cluster_size)}
                   if self.format == "qcow2" and current.cluster_size else None)
        self._replace_with(lambda tmp: qemu_img.create(
            tmp, fmt=self.format, size=current.virtual_size, backing=current.backing_file,
            backing_fmt=current.backing_format, options=options), overwrite=True)
        log.info("%s: wiped", self.path)
        return self.info()

    def _snapshot_target(self, action: str) -> ImageInfo:
        self._require_offline(action)
        if self.format != "qcow2":
            raise StorageError(f"cannot {action} {self.path}: internal snapshots need qcow2, "
                               f"not {self.format}")
        return self.info()

    def _require_snapshot(self, current: ImageInfo, name: str) -> None:
        if current.snapshot(name) is None:
            have = ", ".join(repr(s.name) for s in current.snapshots) or "none"
            raise NotFoundError(f"{self.path} has no snapshot called {name!r} "
                                f"(snapshots: {have})")

    # -- QEMU arguments --------------------------------------------------------------

    def node_name(self, index: int) -> str:
        """The block node name of the disk's format node for ``qemu_args(index)``."""
        return _blockdev.disk_id(validate.index(index, what="drive index"))

    def device_id(self, index: int) -> str:
        """The ``-device`` id for ``qemu_args(index)`` (QMP ``id`` arguments use it)."""
        return _blockdev.disk_id(validate.index(index, what="drive index"))

    def layers(self) -> tuple[_blockdev.Layer, ...]:
        """The image chain QEMU is to open, top first, as the chain check accepted it.

        Checks the image as :meth:`info` does and raises the same errors.
        """
        top = self.info()
        return (_blockdev.Layer(str(self.path), top.format),
                *(_blockdev.Layer(layer.filename, layer.format) for layer in top.backing_chain))

    def qemu_args(self, index: int, *, bootindex: int | None = None,
                  bus: str | None = None) -> list[str]:
        """``-blockdev``/``-device`` arguments attaching this disk as disk number ``index``.

        Node names: ``disk{index}`` (format), ``disk{index}-file`` (protocol), and
        for an overlay ``disk{index}-b{n}`` / ``disk{index}-b{n}-file`` for the
        n-th backing image, wired explicitly to the files the chain check
        accepted. Device id ``disk{index}``; a scsi disk brings its own
        ``virtio-scsi-pci`` controller ``disk{index}-scsi``. ``bus`` places an ide
        or virtio disk on a given bus (q35's AHCI ports ``ide.0``..``ide.5`` take one
        device each, so a machine with several IDE devices must give it);
        ``bootindex`` sets its boot priority. Checks the image as
        :meth:`info` does and raises the same errors.
        """
        return self._args(self.node_name(index), self.device_id(index), bootindex=bootindex,
                          bus=bus)

    def _args(self, node: str, dev_id: str, *, bootindex: int | None,
              bus: str | None) -> list[str]:
        return _blockdev.disk_args(self.layers(), node=node, dev_id=dev_id,
                                   interface=self.interface, readonly=self.readonly,
                                   bootindex=bootindex, bus=bus)

    @property
    def qemu_string(self) -> str:
        """The options that give a QEMU command line this disk, as one shell-quoted string.

        The seed's ``harddrive.qemu_string``: ``shlex.split()`` turns it into argv
        items QEMU takes as they are: the same ``-blockdev`` nodes as
        :meth:`qemu_args` (the image and each backing file the chain check
        accepted, wired explicitly, so QEMU opens exactly these files) and the
        ``-device`` (with its own controller for ``interface="scsi"``). Node and
        device id are ``hd-`` plus a hash of the path, so the strings of several
        disks and CDs combine on one command line. Checks the image as
        :meth:`info` does and raises the same errors.

        >>> argv = [qemu, *shlex.split(disk.qemu_string)]   # doctest: +SKIP
        """
        tag = _blockdev.tag("hd", self.path)
        return shlex.join(self._args(tag, tag, bootindex=None, bus=None))


class _Builder(Protocol):
    def __call__(self, tmp: Path, /) -> None: ...
