"""Building ``-blockdev``/``-device``/``-drive`` arguments shared by disks and CDs."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

#: Disk interfaces and the QEMU device model each one uses.
DISK_DEVICES = {"virtio": "virtio-blk-pci", "ide": "ide-hd", "scsi": "scsi-hd"}
#: CD-ROM interfaces and their device models (both have a tray).
CD_DEVICES = {"ide": "ide-cd", "scsi": "scsi-cd"}


def blockdev(options: dict[str, Any]) -> list[str]:
    """``-blockdev`` in JSON form, which needs no comma escaping for odd file names."""
    return ["-blockdev", json.dumps(options, separators=(",", ":"))]


def device(driver: str, **props: str | int | None) -> list[str]:
    """``-device driver,key=value,...``; values must not contain commas (ids and numbers)."""
    parts = [driver]
    for key, value in props.items():
        if value is None:
            continue
        text = str(value)
        if "," in text:
            raise ValueError(f"device property {key}={text!r} may not contain a comma")
        parts.append(f"{key}={text}")
    return ["-device", ",".join(parts)]


def scsi_controller(controller_id: str) -> list[str]:
    """A virtio-scsi controller of its own, so a scsi disk or CD needs nothing else."""
    return device("virtio-scsi-pci", id=controller_id)


def tag(prefix: str, path: str | os.PathLike[str]) -> str:
    """A node name / device id derived from an image path (``hd-1a2b3c4d``).

    Used by ``qemu_string``, which has no drive number to name things after.
    """
    return f"{prefix}-{zlib.crc32(os.fsencode(path)):08x}"


def attach(driver: str, *, interface: str, node: str, dev_id: str, bus: str | None,
           bootindex: int | None) -> list[str]:
    """The ``-device`` for a block node; a SCSI device brings its own controller."""
    if interface == "scsi":
        return [*scsi_controller(f"{dev_id}-scsi"),
                *device(driver, drive=node, id=dev_id, bus=f"{dev_id}-scsi.0",
                        bootindex=bootindex)]
    return device(driver, drive=node, id=dev_id, bus=bus, bootindex=bootindex)
