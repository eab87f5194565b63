"""Character devices added to a running machine, optionally as virtio serial ports."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import validate
from vmanager.errors import ConfigError, NotFoundError, QemuError, QMPError
from vmanager.machine.base import State
from vmanager.machine.state import Chardev

if TYPE_CHECKING:
    from vmanager.machine.storage import StorageMixin

KINDS = ("socket", "file", "pty")
#: virtio-serial port names: what the guest finds under /sys/class/virtio-ports.
_PORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ids = itertools.count(1)


def create(m: StorageMixin, kind: str, *, path: Path | None, port_name: str | None,
           chardev_id: str | None) -> Chardev:
    """See :meth:`StorageMixin.create_chardev`."""
    m._require_state(State.RUNNING, State.PAUSED, action="add a chardev")
    if kind not in KINDS:
        raise ConfigError(f"chardev kind {kind!r} is not one of {', '.join(KINDS)}")
    ident = validate.name(chardev_id, what="chardev id") if chardev_id is not None \
        else f"vmch{next(_ids)}"
    if ident in m._chardevs:
        raise ConfigError(f"machine {m.name!r} already has a chardev {ident!r}")
    if port_name is not None and (not isinstance(port_name, str) or
                                  not _PORT_RE.match(port_name)):
        raise ConfigError(f"port name {port_name!r} must be 1-64 letters, digits, '.', '_' "
                          "or '-'")
    backend: dict[str, Any]
    made_path: Path | None = None
    if kind == "socket":
        if path is not None:
            raise ConfigError("a socket chardev lives in the machine's run directory; "
                              "do not give path")
        made_path = m.run_dir / f"{ident}.sock"
        backend = {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": str(made_path)}},
            "server": True, "wait": False}}
    elif kind == "file":
        if path is None:
            raise ConfigError("a file chardev needs path=")
        made_path = Path(os.path.abspath(path))
        if not made_path.parent.is_dir():
            raise NotFoundError(f"directory {made_path.parent} for chardev file does not exist")
        backend = {"type": "file", "data": {"out": str(made_path)}}
    else:
        if path is not None:
            raise ConfigError("QEMU picks a pty chardev's path; do not give path")
        backend = {"type": "pty", "data": {}}
    try:
        result = m.qmp("chardev-add", {"id": ident, "backend": backend})
    except QMPError as exc:
        raise QemuError(f"{m.name}: adding chardev {ident} failed: {exc.description}") from exc
    if kind == "pty":
        made_path = Path(str(result["pty"]))
    device_id: str | None = None
    if port_name is not None:
        device_id = f"{ident}-port"
        try:
            m.qmp("device_add", {"driver": "virtserialport", "bus": "vser0.0",
                                 "chardev": ident, "name": port_name, "id": device_id})
        except QMPError as exc:
            m._quiet("chardev-remove", {"id": ident})
            if kind == "socket" and made_path is not None:
                made_path.unlink(missing_ok=True)
            raise QemuError(f"{m.name}: adding serial port {port_name} failed: "
                            f"{exc.description}") from exc
    chardev = Chardev(id=ident, kind=kind, path=made_path, port_name=port_name,
                      device_id=device_id)
    m._chardevs[ident] = chardev
    m.log.info("added chardev %s (%s%s)", ident, kind,
               f", port {port_name}" if port_name else "")
    return chardev


def remove(m: StorageMixin, chardev: Chardev | str, *, timeout: float) -> None:
    """See :meth:`StorageMixin.remove_chardev`."""
    ident = chardev.id if isinstance(chardev, Chardev) else chardev
    found = m._chardevs.get(ident)
    if found is None:
        raise NotFoundError(f"machine {m.name!r} has no chardev {ident!r} made by "
                            "create_chardev()")
    monitor = m._require_monitor()
    if found.device_id is not None:
        mark = monitor.event_mark()
        try:
            m.qmp("device_del", {"id": found.device_id})
        except QMPError as exc:
            raise QemuError(f"{m.name}: removing port {found.device_id} failed: "
                            f"{exc.description}") from exc
        monitor.wait_event("DEVICE_DELETED", timeout=timeout, since=mark,
                           match=lambda ev: ev.get("data", {}).get("device") == found.device_id)
    try:
        m.qmp("chardev-remove", {"id": ident})
    except QMPError as exc:
        raise QemuError(f"{m.name}: removing chardev {ident} failed: {exc.description}") \
            from exc
    if found.kind == "socket" and found.path is not None:
        found.path.unlink(missing_ok=True)
    del m._chardevs[ident]
