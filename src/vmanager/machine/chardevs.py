"""Character devices added to a running machine (``m.chardevs``), optionally as guest ports.

``m.chardevs()`` lists them (the seed-style call); ``m.chardevs.create()`` and
``.remove()`` are what ``m.create_chardev()`` and ``m.remove_chardev()`` call.
They are recorded, so a reattached machine lists and removes them too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmanager import validate
from vmanager.errors import ConfigError, NotFoundError, QemuError, QMPError
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.machine.state import Chardev
from vmanager.qemu import cmdline
from vmanager.qemu.cmdline import VSERIAL_BUS
from vmanager.qemu.qmp import map_qmp_errors

KINDS = ("socket", "file", "pty")
#: virtio-serial port names: what the guest finds under /sys/class/virtio-ports.
_PORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Chardevs(Part):
    """Chardevs added at run time by :meth:`create`; call it to list them."""

    key = "chardevs"

    def __init__(self, vm: MachineView) -> None:
        self._vm = vm
        self._made: dict[str, Chardev] = {}

    def __call__(self) -> list[Chardev]:
        """Chardevs added by :meth:`create` that still exist."""
        return list(self._made.values())

    def teardown(self) -> None:
        """They went with QEMU."""
        self._made = {}

    def runtime(self) -> dict[str, Any]:
        """Every chardev made, for a reattach."""
        return {"made": [{"id": c.id, "kind": c.kind,
                          "path": str(c.path) if c.path is not None else None,
                          "port_name": c.port_name, "device_id": c.device_id}
                         for c in self._made.values()]}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """The chardevs another process made."""
        self._made = {}
        for c in runtime.get("made") or ():
            self._made[str(c["id"])] = Chardev(
                id=str(c["id"]), kind=str(c["kind"]),
                path=Path(c["path"]) if c.get("path") else None,
                port_name=c.get("port_name"), device_id=c.get("device_id"))

    def create(self, kind: str = "socket", *, path: str | os.PathLike[str] | None = None,
               port_name: str | None = None, chardev_id: str | None = None) -> Chardev:
        """See :meth:`Machine.create_chardev`."""
        made = _create(self._vm, self._made, kind,
                       path=Path(path) if path is not None else None, port_name=port_name,
                       chardev_id=chardev_id)
        self._vm.changed()
        return made

    def remove(self, chardev: Chardev | str, *, timeout: float = 30.0) -> None:
        """See :meth:`Machine.remove_chardev`."""
        _remove(self._vm, self._made, chardev, timeout=timeout)
        self._vm.changed()



def _free_id(m: MachineView, made: dict[str, Chardev]) -> str:
    """``vmchN`` that neither this part nor QEMU uses (another process may have made some)."""
    taken = set(made) | {str(c.get("label")) for c in m.qmp("query-chardev")}
    return next(cmdline.chardev_id(n) for n in range(1, len(taken) + 2)
                if cmdline.chardev_id(n) not in taken)


def _create(m: MachineView, made: dict[str, Chardev], kind: str, *, path: Path | None,
            port_name: str | None, chardev_id: str | None) -> Chardev:
    m.require(State.RUNNING, State.PAUSED, action="add a chardev")
    if kind not in KINDS:
        raise ConfigError(f"chardev kind {kind!r} is not one of {', '.join(KINDS)}")
    ident = validate.name(chardev_id, what="chardev id") if chardev_id is not None \
        else _free_id(m, made)
    if ident in made:
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
    with map_qmp_errors(f"{m.name}: adding chardev {ident} failed", QemuError):
        result = m.qmp("chardev-add", {"id": ident, "backend": backend})
    if kind == "pty":
        made_path = Path(str(result["pty"]))
    device_id: str | None = None
    if port_name is not None:
        device_id = cmdline.port_id(ident)
        with map_qmp_errors(f"{m.name}: adding serial port {port_name} failed"):
            try:
                m.qmp("device_add", {"driver": "virtserialport", "bus": VSERIAL_BUS,
                                     "chardev": ident, "name": port_name, "id": device_id})
            except QMPError:
                m.quiet("chardev-remove", {"id": ident})
                if kind == "socket" and made_path is not None:
                    made_path.unlink(missing_ok=True)
                raise
    chardev = Chardev(id=ident, kind=kind, path=made_path, port_name=port_name,
                      device_id=device_id)
    made[ident] = chardev
    m.log.info("added chardev %s (%s%s)", ident, kind,
               f", port {port_name}" if port_name else "")
    return chardev


def _remove(m: MachineView, made: dict[str, Chardev], chardev: Chardev | str, *,
            timeout: float) -> None:
    ident = chardev.id if isinstance(chardev, Chardev) else chardev
    found = made.get(ident)
    if found is None:
        raise NotFoundError(f"machine {m.name!r} has no chardev {ident!r} made by "
                            "create_chardev()")
    monitor = m.monitor()
    if found.device_id is not None:
        mark = monitor.event_mark()
        with map_qmp_errors(f"{m.name}: removing port {found.device_id} failed", QemuError):
            m.qmp("device_del", {"id": found.device_id})
        monitor.wait_event("DEVICE_DELETED", timeout=timeout, since=mark,
                           match=lambda ev: ev.get("data", {}).get("device") == found.device_id)
    with map_qmp_errors(f"{m.name}: removing chardev {ident} failed", QemuError):
        m.qmp("chardev-remove", {"id": ident})
    if found.kind == "socket" and found.path is not None:
        found.path.unlink(missing_ok=True)
    del made[ident]
