"""Disk images and CD-ROMs: ``Harddrive``, ``CD`` and the ``qemu-img`` runner.

Offline work (create, info, resize, internal snapshots, wipe, ISO building)
happens here with ``qemu-img`` and an ISO tool; live work on a running machine
(QMP snapshots, eject, online resize) belongs to ``vmanager.machine``, which
uses :meth:`Harddrive.qemu_args`/:meth:`CD.qemu_args` node names and device ids.
"""

from vmanager.storage.cd import CD
from vmanager.storage.chain import BackingEscapeError
from vmanager.storage.harddrive import Harddrive
from vmanager.storage.qemu_img import ImageInfo, QemuImgError, SnapshotInfo
from vmanager.storage.users import CDUser, DiskUser

__all__ = [
    "CD",
    "BackingEscapeError",
    "CDUser",
    "DiskUser",
    "Harddrive",
    "ImageInfo",
    "QemuImgError",
    "SnapshotInfo",
]
