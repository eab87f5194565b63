"""Frozen results of the Machine's state calls: memory, dumps, chardevs, migration.

Whole-machine snapshots are listed as :class:`vmanager.storage.SnapshotInfo`
(the QAPI shape qemu-img and QMP share); everything else a state call returns
is defined here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmanager.errors import HostError

#: What a whole-machine snapshot's vmstate lives in when a machine has no writable
#: qcow2 disk: a small qcow2 file in the state directory, never attached to a guest
#: device (only ``blockdev-add``-ed), so snapshots of a diskless guest work too.
STATE_DISK_NAME = "vmstate.qcow2"


@dataclass(frozen=True)
class MemoryInfo:
    """The guest's RAM as QEMU sees it, in MiB.

    ``base`` is ``-m``'s size, ``plugged`` the sum of hot-plugged DIMMs, ``total``
    their sum, ``balloon`` what the guest may use after the balloon (``None``
    without a balloon driver in the guest), ``max`` the hot-plug ceiling
    (``maxmem``) and ``free_slots`` how many DIMMs may still be plugged.
    """

    base: int
    plugged: int
    balloon: int | None
    max: int
    free_slots: int

    @property
    def total(self) -> int:
        """Base plus hot-plugged memory, in MiB."""
        return self.base + self.plugged


@dataclass(frozen=True)
class DumpProgress:
    """Progress of :meth:`Machine.dump_memory`: bytes written of ``total``."""

    completed: int
    total: int

    @property
    def fraction(self) -> float:
        """0.0 .. 1.0."""
        return self.completed / self.total if self.total else 0.0


@dataclass(frozen=True)
class DumpResult:
    """A finished memory dump: the ELF file and its size in bytes."""

    path: Path
    size: int
    seconds: float


@dataclass(frozen=True)
class Chardev:
    """A character device added at run time by :meth:`Machine.create_chardev`.

    ``kind`` is ``"socket"`` (QEMU listens on the unix socket ``path``; use
    :meth:`connect`), ``"file"`` (QEMU writes the guest's output to ``path``) or
    ``"pty"`` (``path`` is the pseudo-terminal QEMU opened). ``port_name`` and
    ``device_id`` are set when a virtio serial port was added for it: the guest
    sees ``/sys/class/virtio-ports/vportNpM/name`` containing ``port_name``.
    """

    id: str
    kind: str
    path: Path | None
    port_name: str | None = None
    device_id: str | None = None

    def connect(self, *, timeout: float = 10.0) -> socket.socket:
        """Connect to a ``"socket"`` chardev; the caller owns (and closes) the socket.

        Raises :class:`HostError` for another kind or when the connection fails.
        """
        if self.kind != "socket" or self.path is None:
            raise HostError(f"chardev {self.id} is a {self.kind}, not a socket")
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(str(self.path))
                return sock
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise HostError(f"cannot connect to chardev {self.id} at {self.path}: "
                                    f"{exc}") from exc
                time.sleep(0.05)


@dataclass(frozen=True)
class MigrationProgress:
    """One ``query-migrate`` reading: status and RAM bytes moved so far."""

    status: str
    transferred: int
    remaining: int
    total: int
    dirty_rate: int = 0

    @property
    def fraction(self) -> float:
        """Share of RAM already sent (it can go back down when pages get dirty)."""
        return 1.0 - self.remaining / self.total if self.total else 0.0


@dataclass(frozen=True)
class MigrationResult:
    """A completed migration or state save, as QEMU measured it."""

    target: str
    total_ms: int
    downtime_ms: int | None
    transferred: int


ProgressCallback = Callable[[MigrationProgress], None]
DumpCallback = Callable[[DumpProgress], None]
