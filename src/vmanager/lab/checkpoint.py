"""Whole-lab checkpoints: every machine's RAM, devices and disks at one moment.

A checkpoint pauses every machine of the lab first, then saves each one's
whole-machine snapshot (:meth:`vmanager.Machine.snapshot`: RAM and device
state plus every writable qcow2 disk; a machine without a disk gets a small
state disk in its state directory), then resumes them all. While one machine
is saved the others are paused too, so the lab's state is consistent across
machines: no machine sees a peer run on while it stands still.

A rollback pauses every machine, loads each one's snapshot of that name and
resumes them together. Network objects (switches, routers, namespaces, NICs,
impairments) are left as they are: they hold no state a guest depends on
beyond what the guest's own RAM remembers (DHCP leases are re-used by
``dnsmasq`` from its lease file).

The checkpoints of a lab are listed in ``state_dir()/labs/checkpoints/LAB.json``
with the time each took; ``down`` removes the list with the machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import paths, validate
from vmanager.errors import ConfigError, NotFoundError, StateError, VmanagerError
from vmanager.lab import record as labrec
from vmanager.state.lock import locked

if TYPE_CHECKING:
    from vmanager.lab.model import Lab
    from vmanager.state.persist import PersistentMachine

log = logging.getLogger(__name__)

#: Seconds one machine's snapshot may take (TCG guests with much RAM are slow).
SAVE_TIMEOUT = 600.0


@dataclass(frozen=True)
class Checkpoint:
    """A lab checkpoint: its name, when it was taken, how long it took, which machines."""

    name: str
    lab: str
    created: float
    seconds: float
    machines: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """For JSON output."""
        return {"name": self.name, "lab": self.lab, "created": self.created,
                "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
                "seconds": self.seconds, "machines": list(self.machines)}


@dataclass(frozen=True)
class Rollback:
    """What a rollback did and how long it took."""

    name: str
    lab: str
    seconds: float
    machines: tuple[str, ...]


def _file(lab: str) -> Path:
    return paths.private_dir(labrec.labs_dir() / "checkpoints") / f"{lab}.json"


def _read(lab: str) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_file(lab).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"checkpoint list {_file(lab)} is unreadable: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _write(lab: str, data: dict[str, dict[str, Any]]) -> None:
    path = _file(lab)
    if not data:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def forget_all(lab: str) -> None:
    """Drop the checkpoint list of ``lab`` (its machines and their snapshots are gone)."""
    _file(lab).unlink(missing_ok=True)


def _name(name: object) -> str:
    checked = validate.name(name, what="checkpoint name", max_len=64)
    if checked.isdigit():
        raise ConfigError(f"checkpoint name {checked!r} is all digits; add a letter (QEMU "
                          "would take it for a snapshot id)")
    return checked


@contextlib.contextmanager
def _attached(lab: Lab) -> Iterator[list[PersistentMachine]]:
    """Every machine of ``lab`` attached (all must run); detached again afterwards."""
    from vmanager.state import records
    from vmanager.state.persist import attach, detach
    from vmanager.state.process import Liveness
    if labrec.load(lab.name) is None:
        raise StateError(f"lab {lab.name!r} is not up")
    for spec in lab.machines:
        rec = records.find(spec.name)
        if rec is None or records.liveness(rec) is not Liveness.RUNNING:
            raise StateError(f"lab {lab.name!r}: machine {spec.name!r} is not running; a "
                             "checkpoint covers every machine of the lab")
    machines: list[PersistentMachine] = []
    try:
        for spec in lab.machines:
            machines.append(attach(spec.name))
        yield machines
    finally:
        for m in machines:
            with contextlib.suppress(VmanagerError):
                detach(m)


@contextlib.contextmanager
def _all_paused(machines: list[PersistentMachine]) -> Iterator[None]:
    """Pause every machine; resume those that ran, even when the block fails."""
    from vmanager.machine.base import State
    paused = []
    try:
        for m in machines:
            if m.state is State.RUNNING:
                m.freeze()
                paused.append(m)
        yield
    finally:
        failures = []
        for m in paused:
            try:
                m.unfreeze()
            except VmanagerError as exc:
                failures.append(f"{m.name}: {exc}")
        if failures:
            log.error("could not resume every machine:\n%s", "\n".join(failures))


def checkpoint(lab: Lab, name: str, *, timeout: float = SAVE_TIMEOUT) -> Checkpoint:
    """Save the whole lab's state as checkpoint ``name``; see the module docstring.

    Raises:
        ConfigError: a bad name, or a checkpoint of that name exists already.
        StateError: the lab is not up or a machine is not running.
        StorageError: a machine cannot be snapshotted (a writable raw disk); the
            snapshots this call took are deleted again.
    """
    name = _name(name)
    with locked("lab", lab.name, timeout=30.0):
        known = _read(lab.name)
        if name in known:
            raise ConfigError(f"lab {lab.name!r} already has a checkpoint {name!r}; delete "
                              "it first")
        started = time.monotonic()
        with _attached(lab) as machines:
            for m in machines:
                if any(s.name == name for s in m.snapshots()):
                    raise ConfigError(f"machine {m.name!r} already has a snapshot {name!r} "
                                      "(not from a lab checkpoint); pick another name")
            saved: list[PersistentMachine] = []
            with _all_paused(machines):
                try:
                    for m in machines:
                        m.snapshot(name, timeout=timeout)
                        saved.append(m)
                except BaseException:
                    for m in saved:
                        with contextlib.suppress(VmanagerError):
                            m.delete_snapshot(name)
                    raise
        seconds = round(time.monotonic() - started, 3)
        made = Checkpoint(name, lab.name, time.time(), seconds,
                          tuple(m.name for m in machines))
        known[name] = made.as_dict()
        _write(lab.name, known)
    log.info("lab %s: checkpoint %s of %d machines in %.2f s", lab.name, name,
             len(made.machines), seconds)
    return made


def rollback(lab: Lab, name: str, *, timeout: float = SAVE_TIMEOUT) -> Rollback:
    """Return every machine of the lab to checkpoint ``name`` (RAM, devices, disks).

    Every machine is checked for the snapshot before any is touched.

    Raises:
        NotFoundError: no such checkpoint (naming those that exist), or a machine
            lacks its snapshot.
        StateError: the lab is not up or a machine is not running.
    """
    name = _name(name)
    with locked("lab", lab.name, timeout=30.0):
        if name not in _read(lab.name):
            raise NotFoundError(f"lab {lab.name!r} has no checkpoint {name!r}; it has: "
                                f"{', '.join(sorted(_read(lab.name))) or 'none'}")
        started = time.monotonic()
        with _attached(lab) as machines:
            for m in machines:
                if not any(s.name == name for s in m.snapshots()):
                    raise NotFoundError(f"machine {m.name!r} has no snapshot {name!r} (was "
                                        "it restarted or added after the checkpoint?)")
            with _all_paused(machines):
                for m in machines:
                    m.load_snapshot(name, timeout=timeout)
        seconds = round(time.monotonic() - started, 3)
    log.info("lab %s: rolled back to %s in %.2f s", lab.name, name, seconds)
    return Rollback(name, lab.name, seconds, tuple(m.name for m in machines))


def checkpoints(lab: Lab) -> list[Checkpoint]:
    """The lab's checkpoints, oldest first."""
    out = []
    for name, data in _read(lab.name).items():
        try:
            out.append(Checkpoint(name, lab.name, float(data["created"]),
                                  float(data["seconds"]), tuple(data["machines"])))
        except (KeyError, TypeError, ValueError):
            log.warning("lab %s: checkpoint entry %r is unreadable; skipped", lab.name, name)
    return sorted(out, key=lambda c: c.created)


def delete(lab: Lab, name: str) -> None:
    """Delete checkpoint ``name``: every machine's snapshot of it, then the entry.

    Raises:
        NotFoundError: no such checkpoint.
    """
    name = _name(name)
    with locked("lab", lab.name, timeout=30.0):
        known = _read(lab.name)
        if name not in known:
            raise NotFoundError(f"lab {lab.name!r} has no checkpoint {name!r}")
        with _attached(lab) as machines:
            for m in machines:
                if any(s.name == name for s in m.snapshots()):
                    m.delete_snapshot(name)
        del known[name]
        _write(lab.name, known)
