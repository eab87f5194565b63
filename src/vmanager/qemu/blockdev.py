"""``-blockdev``/``-device``/``-drive`` arguments of disks and CDs, and their QEMU ids.

Pure functions: they read no file and run nothing, so the argv of every
block-device combination can be unit-tested.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
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


def attach(driver: str, *, interface: str, node: str | None, dev_id: str, bus: str | None,
           bootindex: int | None) -> list[str]:
    """The ``-device`` for a block node; a SCSI device brings its own controller."""
    if interface == "scsi":
        return [*scsi_controller(f"{dev_id}-scsi"),
                *device(driver, drive=node, id=dev_id, bus=f"{dev_id}-scsi.0",
                        bootindex=bootindex)]
    return device(driver, drive=node, id=dev_id, bus=bus, bootindex=bootindex)


# -- QEMU ids of block devices (the only place they are spelled) ---------------------------
def disk_id(index: int) -> str:
    """Node name of disk ``index``'s format node, and its ``-device`` id."""
    return f"disk{_index(index)}"


def cd_id(index: int) -> str:
    """Node name of CD drive ``index``'s medium, and the drive's ``-device`` id."""
    return f"cd{_index(index)}"


def _index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"drive index must be a non-negative integer, got {index!r}")
    return index


@dataclass(frozen=True)
class Layer:
    """One image of a disk's chain: the file and its format (top image first)."""

    filename: str
    format: str


def disk_args(layers: Sequence[Layer], *, node: str, dev_id: str, interface: str,
              readonly: bool, bootindex: int | None = None,
              bus: str | None = None) -> list[str]:
    """``-blockdev``/``-device`` for a disk whose chain (top first) is ``layers``.

    Node names: ``node`` (format), ``node-file`` (protocol), and for the n-th
    backing image ``node-b{n}`` / ``node-b{n}-file``, each wired explicitly so
    QEMU opens no file vmanager did not check. Backing images are always
    read-only. The device is ``dev_id``.
    """
    names = [node] + [f"{node}-b{n}" for n in range(1, len(layers))]
    args: list[str] = []
    for depth in reversed(range(len(layers))):
        layer, layer_node = layers[depth], names[depth]
        read_only = readonly or depth > 0
        args += blockdev({"driver": "file", "filename": layer.filename,
                          "node-name": f"{layer_node}-file", "read-only": read_only})
        fmt_node: dict[str, object] = {"driver": layer.format, "node-name": layer_node,
                                       "file": f"{layer_node}-file", "read-only": read_only}
        if layer.format == "qcow2":
            fmt_node["backing"] = names[depth + 1] if depth + 1 < len(layers) else None
        args += blockdev(fmt_node)
    return args + attach(DISK_DEVICES[interface], interface=interface, node=node,
                         dev_id=dev_id, bus=bus, bootindex=bootindex)


def cd_args(path: str | None, *, node: str, dev_id: str, interface: str,
            bootindex: int | None = None, bus: str | None = None) -> list[str]:
    """``-blockdev``/``-device`` for a CD drive holding the ISO ``path`` (``None``: empty).

    The medium is node ``node`` (raw, read-only) over ``node-file``; the drive,
    device ``dev_id``, has a tray, so QMP can eject and change it.
    """
    if path is None:
        return attach(CD_DEVICES[interface], interface=interface, node=None, dev_id=dev_id,
                      bus=bus, bootindex=bootindex)
    args = blockdev({"driver": "file", "filename": path, "node-name": f"{node}-file",
                     "read-only": True})
    args += blockdev({"driver": "raw", "file": f"{node}-file", "node-name": node,
                      "read-only": True})
    return args + attach(CD_DEVICES[interface], interface=interface, node=node,
                         dev_id=dev_id, bus=bus, bootindex=bootindex)
