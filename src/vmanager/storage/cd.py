"""``CD``: an ISO image for a machine's CD-ROM drive, and building one from a directory.

Example (a cloud-init NoCloud seed)::

    with CD.from_directory(seed_dir) as cd:      # a temporary ISO, removed on close
        Machine(..., cd=cd)

ISO images are built by ``xorriso -as mkisofs`` (Debian package ``xorriso``) or,
if that is missing, ``genisoimage`` (package ``genisoimage``), with Joliet and
Rock Ridge so long and lower-case names survive.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import tempfile
import weakref
from pathlib import Path
from types import TracebackType

from vmanager import hostcmd, validate
from vmanager.errors import ConfigError, HostError, NotFoundError, StateError
from vmanager.qemu import blockdev as _blockdev
from vmanager.storage.qemu_img import StrPath
from vmanager.storage.users import CDUser

log = logging.getLogger(__name__)

#: Tools tried in order; each is invoked with mkisofs-compatible options.
ISO_TOOLS: tuple[tuple[str, ...], ...] = (("xorriso", "-as", "mkisofs"), ("genisoimage",))
#: Seconds an ISO build may take.
ISO_TIMEOUT = 120.0

# ISO 9660 allows 32 characters; cloud-init wants "cidata" in lower case, so this is
# looser than the standard's d-characters, as both tools are.
_VOLID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


class CD:
    """An existing ISO image attached as a CD-ROM with a tray.

    ``interface`` is ``"ide"`` (default) or ``"scsi"``. Raises
    :class:`NotFoundError` naming the file if it does not exist,
    :class:`ConfigError` for a bad interface or a path that is not a file.

    A ``CD`` made by :meth:`from_directory` without ``output`` owns its temporary
    ISO and deletes it on :meth:`close` (also a context manager); a ``CD`` never
    deletes a file it did not create.
    """

    def __init__(self, path: StrPath, *, interface: str = "ide") -> None:
        if interface not in _blockdev.CD_DEVICES:
            raise ConfigError(f"CD interface {interface!r} is not supported; use one of "
                              f"{', '.join(_blockdev.CD_DEVICES)}")
        self.path = validate.path(path, what="ISO image path")
        if not self.path.exists():
            raise NotFoundError(f"ISO image {self.path} does not exist")
        if not self.path.is_file():
            raise ConfigError(f"ISO image {self.path} is not a regular file")
        self.interface = interface
        self._cleanup: weakref.finalize[..., CD] | None = None
        self._users: list[CDUser] = []

    def __repr__(self) -> str:
        return f"CD({str(self.path)!r})"

    # -- owning a temporary ISO ------------------------------------------------------

    def _own(self, tmpdir: Path) -> None:
        self._cleanup = weakref.finalize(self, shutil.rmtree, tmpdir, ignore_errors=True)

    @property
    def owned(self) -> bool:
        """Whether this CD will delete its (temporary) ISO on :meth:`close`."""
        return self._cleanup is not None and self._cleanup.alive

    def close(self) -> None:
        """Delete the ISO if this CD created it as a temporary file; idempotent."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> CD:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- in a machine's drive --------------------------------------------------------

    @property
    def attached_to(self) -> tuple[str, ...]:
        """Names of the running machines that have this CD in their drive."""
        return tuple(user.name for user in self._users)

    def attach(self, user: CDUser) -> None:
        """Note that ``user``'s drive holds this CD (called by the machine)."""
        if not any(u is user for u in self._users):
            self._users.append(user)

    def detach(self, user: CDUser) -> None:
        """Undo :meth:`attach`; a machine that is not attached is ignored."""
        self._users = [u for u in self._users if u is not user]

    def eject(self, *, machine: CDUser | None = None) -> None:
        """Eject this CD from the running machine whose drive holds it (the seed's ``eject``).

        The machine opens its tray and removes the medium: the guest sees an
        empty drive. ``machine`` (a :class:`~vmanager.Machine`, or anything with
        its ``name``) chooses one when the same ISO is in several machines'
        drives. :meth:`vmanager.Machine.eject` calls this.

        Raises:
            StateError: the CD is in no running machine's drive (nothing to eject
                from), it is in several and ``machine`` was not given, or it is not
                in ``machine``'s drive.
            StorageError: QEMU refused to eject it.
        """
        if machine is not None:
            # the machine itself, or the part of it that holds the drive
            user = next((u for u in self._users if u is machine), None) or next(
                (u for u in self._users if u.name == getattr(machine, "name", None)), None)
            if user is None:
                raise StateError(f"{self!r} is not in the drive of machine "
                                 f"{getattr(machine, 'name', machine)!r}; nothing to eject",
                                 state="not attached", required="attached")
            user.eject_cd(self)
            return
        if not self._users:
            raise StateError(f"{self!r} is not in any running machine's drive, so there is "
                             "nothing to eject it from (give it to Machine(cd=...) and start "
                             "the machine, or use Machine.change_cd())",
                             state="not attached", required="attached")
        if len(self._users) > 1:
            raise StateError(f"{self!r} is in the drives of machines "
                             f"{', '.join(self.attached_to)}; pass machine= to say which "
                             "one to eject it from", state="attached to several",
                             required="one machine")
        self._users[0].eject_cd(self)

    # -- QEMU arguments --------------------------------------------------------------

    def node_name(self, index: int) -> str:
        """The block node name of the medium for ``qemu_args(index)``."""
        return _blockdev.cd_id(_index(index))

    def device_id(self, index: int) -> str:
        """The ``-device`` id of the drive; QMP tray and medium commands take it as ``id``."""
        return _blockdev.cd_id(_index(index))

    def qemu_args(self, index: int, *, bootindex: int | None = None,
                  bus: str | None = None) -> list[str]:
        """``-blockdev``/``-device`` arguments for CD-ROM drive number ``index``.

        The medium is node ``cd{index}`` (raw, read-only) over ``cd{index}-file``;
        the drive is device ``cd{index}`` (``ide-cd`` or ``scsi-cd``, which have a
        tray, so QMP ``blockdev-open-tray``/``blockdev-change-medium`` with
        ``id="cd{index}"`` can eject and change it). A scsi CD brings its own
        controller ``cd{index}-scsi``. ``bus`` places an ide CD on a given bus (q35's
        AHCI ports ``ide.0``..``ide.5`` take one device each); ``bootindex`` sets its
        boot priority. Raises :class:`NotFoundError` if the ISO
        has gone.
        """
        return self._args(self.node_name(index), self.device_id(index), bootindex=bootindex,
                          bus=bus)

    def _args(self, node: str, dev_id: str, *, bootindex: int | None,
              bus: str | None) -> list[str]:
        if not self.path.is_file():
            raise NotFoundError(f"ISO image {self.path} does not exist")
        return _blockdev.cd_args(str(self.path), node=node, dev_id=dev_id,
                                 interface=self.interface, bootindex=bootindex, bus=bus)

    @property
    def qemu_string(self) -> str:
        """The options that give a QEMU command line this CD, as one shell-quoted string.

        The seed's ``cd.qemu_string``: ``shlex.split()`` turns it into argv items
        QEMU takes as they are (``-blockdev`` for the ISO, read-only, and the
        CD-ROM ``-device``, with its own controller for ``interface="scsi"``).
        Node and device id are ``cd-`` plus a hash of the path, so the strings of
        several disks and CDs combine on one command line. Raises
        :class:`NotFoundError` if the ISO is gone.

        >>> argv = [qemu, *shlex.split(cd.qemu_string)]   # doctest: +SKIP
        """
        tag = _blockdev.tag("cd", self.path)
        return shlex.join(self._args(tag, tag, bootindex=None, bus=None))

    # -- building --------------------------------------------------------------------

    @classmethod
    def from_directory(cls, directory: StrPath, *, output: StrPath | None = None,
                       volume_id: str = "cidata", interface: str = "ide",
                       timeout: float = ISO_TIMEOUT) -> CD:
        """Build an ISO 9660 image (Joliet + Rock Ridge) of ``directory``'s contents.

        The files appear at the root of the ISO. With ``output`` the ISO is
        written there (replacing a file of that name only once the build
        succeeded); without, it goes to a private temporary directory that the
        returned ``CD`` owns and removes on :meth:`close`. ``volume_id`` is the
        label (``cidata`` for a cloud-init NoCloud seed).

        Raises :class:`NotFoundError` if ``directory`` does not exist,
        :class:`ConfigError` for a bad volume id, :class:`HostError` if neither
        xorriso nor genisoimage is installed, :class:`CommandError` if the tool
        fails or times out. Nothing is left behind on failure.
        """
        src = Path(os.path.abspath(directory))
        if not src.exists():
            raise NotFoundError(f"directory {src} for the ISO image does not exist")
        if not src.is_dir():
            raise ConfigError(f"{src} is not a directory")
        if not isinstance(volume_id, str) or not _VOLID_RE.match(volume_id):
            raise ConfigError(f"ISO volume id {volume_id!r} must be 1-32 letters, digits, "
                              "'_', '.' or '-', not starting with '-' or '.'")
        tool = _iso_tool()
        owned_dir: Path | None = None
        if output is None:
            owned_dir = Path(tempfile.mkdtemp(prefix="vmanager-cd-"))
            target = owned_dir / f"{volume_id}.iso"
        else:
            target = Path(os.path.abspath(output))
            if not target.parent.is_dir():
                raise NotFoundError(f"directory {target.parent} for the ISO does not exist")
        try:
            fd, tmpname = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                           dir=target.parent)
            os.close(fd)
            tmp = Path(tmpname)
            try:
                # No "--": xorriso's -as mkisofs would end there. src is absolute, so
                # it cannot be read as an option.
                argv = [*tool, "-quiet", "-o", str(tmp), "-V", volume_id, "-J", "-r",
                        "-input-charset", "utf-8", str(src)]
                _run_tool(argv, timeout=timeout)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            cd = cls(target, interface=interface)
        except BaseException:
            if owned_dir is not None:
                shutil.rmtree(owned_dir, ignore_errors=True)
            raise
        if owned_dir is not None:
            cd._own(owned_dir)
        log.info("built ISO %s from %s with %s", target, src, tool[0])
        return cd


def _iso_tool() -> tuple[str, ...]:
    for tool in ISO_TOOLS:
        found = shutil.which(tool[0])
        if found:
            return (found, *tool[1:])
    raise HostError("building an ISO needs xorriso or genisoimage "
                    "(on Debian: apt-get install xorriso)")


def _run_tool(argv: list[str], *, timeout: float) -> None:
    log.debug("running %s", argv)
    hostcmd.run(argv, timeout=timeout, what=f"{Path(argv[0]).name} (building an ISO)")


def _index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"drive index must be a non-negative integer, got {index!r}")
    return index

