"""What a running machine offers the disks and CDs it holds.

The machine (``vmanager.machine``) implements these protocols; storage never
imports it, so the layers stay storage below machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from vmanager.storage.qemu_img import SnapshotInfo

if TYPE_CHECKING:
    from vmanager.storage.cd import CD
    from vmanager.storage.harddrive import Harddrive


class DiskUser(Protocol):
    """What a running machine offers a :class:`~vmanager.storage.Harddrive` it has attached."""

    @property
    def name(self) -> str:
        """The machine's name, for error messages."""

    def disk_snapshots(self, drive: Harddrive) -> Sequence[SnapshotInfo]:
        """The drive's internal snapshots as the running QEMU sees them (QMP)."""


class CDUser(Protocol):
    """What a running machine offers a :class:`~vmanager.storage.CD` in its drive."""

    @property
    def name(self) -> str:
        """The machine's name, for error messages."""

    def eject_cd(self, cd: CD) -> None:
        """Take ``cd`` out of the machine's drive (the guest sees an empty drive)."""
