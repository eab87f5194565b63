"""The two ends of a live migration between servers, each run by that server's vmanager.

The stream goes through the orchestrating host's two SSH connections and
nowhere else: the source's ``vmanager migrate-send`` writes it to its standard
output, the orchestrator hands that pipe to the destination's ``vmanager
migrate-receive`` as its standard input (no copy in Python on that host). So
the channel is authenticated and encrypted by SSH, and no TCP port is opened
on any server. On each server QEMU talks to a unix socket in the machine's
owner-only run directory, which the vmanager process copies to or from its
standard stream.

The source's QEMU is ended only after the orchestrator says ``commit`` (the
destination runs the guest); on ``abort`` or a lost connection the source
resumes, so a failure never loses the guest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, NotFoundError, QemuError, StateError, VmanagerError
from vmanager.lab import mirror
from vmanager.lab import record as labrec
from vmanager.state import records
from vmanager.state.persist import attach, detach
from vmanager.state.records import MachineRecord

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DEFAULT_BANDWIDTH = 10 << 30  # bytes/s: effectively unlimited (QEMU's default is 128 MiB/s)
_POLL = 0.02


def _pump(src: int, dst: int | socket.socket) -> int:
    """Copy until EOF; returns the bytes copied."""
    total = 0
    while True:
        chunk = os.read(src, CHUNK)
        if not chunk:
            return total
        if isinstance(dst, socket.socket):
            dst.sendall(chunk)
        else:
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view):]
        total += len(chunk)


def _say(data: dict[str, Any], out: Any) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


# -- destination --------------------------------------------------------------------------

def receive(lab_name: str, machine: str, definition: dict[str, Any], *, stream: int,
            timeout: float = 600.0, disks: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """Start ``machine`` of lab ``lab_name`` here as a migration destination, fed from ``stream``.

    ``disks``: the source's writable disks (:func:`vmanager.lab.mirror.plan`),
    made here empty and exported over NBD for the source to mirror into; ``None``
    when the storage is shared. Prints ``{"ready": true}`` on stdout once QEMU
    waits for the state; returns once the guest runs here. On any failure
    nothing of the machine is left, its new disk images included.

    Raises:
        NotFoundError: the lab is not up on this server.
        ConfigError: a machine of that name exists here already.
        QemuError: the incoming state did not load.
    """
    from vmanager.lab.runner import _remove, start_lab_machine
    rec = labrec.load(lab_name)
    if rec is None:
        raise NotFoundError(f"lab {lab_name!r} is not up on this server (its switches must be "
                            "here before a machine can move in)")
    if records.find(machine) is not None or rec.find("machine", machine) is not None:
        raise ConfigError(f"machine {machine!r} already exists on this server")
    for nic in definition.get("nics") or []:
        sw = nic.get("switch")
        if sw and rec.find("switch", sw) is None:
            raise NotFoundError(f"switch {sw!r} of machine {machine!r} is not on this server")
    item = {"kind": "machine", "name": machine,
            "netns": machine if definition.get("nics") else None}
    records.save(MachineRecord(machine, definition=definition, persistent=True, lab=lab_name))
    rec.put(item)
    m = None
    made: list[Path] = []
    try:
        mirror.check_media(definition)
        if disks:
            mirror.create_disks(machine, definition, disks, made)
        m = start_lab_machine(records.load(machine), incoming=True)
        mirror.export(m, disks or [])
        sock_path = m.run_dir / "migrate-in.sock"
        m.qmp("migrate-set-capabilities",
              {"capabilities": [{"capability": "events", "state": True}]})
        m.qmp("migrate-incoming", {"uri": f"unix:{sock_path}"})
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        copied: list[int] = []
        with conn:
            conn.connect(str(sock_path))
            _say({"ready": True}, sys.stdout)
            # The stream's end is not waited for: the source's ssh client keeps its
            # stdout open until told to commit. QEMU knows when the state is complete.
            def feed() -> None:
                with contextlib.suppress(OSError):
                    copied.append(_pump(stream, conn))
                    conn.shutdown(socket.SHUT_WR)  # a broken stream fails QEMU at once
            thread = threading.Thread(target=feed, name="vmanager-migrate-in", daemon=True)
            thread.start()
            status = _wait_incoming(m, timeout)
        mirror.unexport(m, disks or [])
        m.migration.settle()  # the guest runs: its shell will not greet again
        detach(m)
        m = None
        return {"machine": machine, "status": status}
    except BaseException:
        if m is not None:
            with contextlib.suppress(VmanagerError):
                m.kill()
        with contextlib.suppress(VmanagerError):
            _remove(item, lab=rec.name)
        rec.drop("machine", machine)
        with contextlib.suppress(VmanagerError):
            if records.find(machine) is not None:
                records.delete(machine)
        for path in made:  # after QEMU: it held them open
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise


def _wait_incoming(m: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if not m.is_alive():
            raise QemuError(f"{m.name}: QEMU exited while receiving the machine state "
                            "(the stream broke or did not match this machine)")
        status = str(m.qmp("query-status")["status"])
        if status not in ("inmigrate", "prelaunch"):
            if status in ("running", "paused", "postmigrate"):
                return status
            raise QemuError(f"{m.name}: incoming migration ended in state {status}")
        if time.monotonic() > deadline:
            raise QemuError(f"{m.name}: the state did not arrive within {timeout} s")
        time.sleep(_POLL)


# -- source -------------------------------------------------------------------------------

def send(machine: str, *, stream: int, control: Any, report: Any, timeout: float = 600.0,
         downtime_ms: int = 100, bandwidth: int = DEFAULT_BANDWIDTH,
         disks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Migrate running ``machine`` into ``stream``; end it here on ``commit`` from ``control``.

    ``disks``: the plan the destination made its disks from; each is mirrored
    through its relay socket first (:mod:`vmanager.lab.mirror`) and removed
    here after the commit. Writes progress and then the migration result as
    JSON lines to ``report``, then waits for a line on ``control``: ``commit``
    ends the machine here (QEMU, namespace, records, moved disks), anything
    else resumes it on its own disks.

    Raises:
        NotFoundError / StateError: no such running machine.
        QemuError: the migration failed (the machine keeps running here).
    """
    rec_m = records.find(machine)
    if rec_m is None:
        raise NotFoundError(f"machine {machine!r} does not exist on this server")
    m = attach(machine, timeout=30)
    disks = disks or []
    if disks and [d["node"] for d in mirror.plan(m)] != [d["node"] for d in disks]:
        detach(m)
        raise StateError(f"the disks of {machine} changed since the destination was "
                         "prepared; try again")
    sock_path = m.run_dir / "migrate-out.sock"
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    copied: list[int] = []
    failure: list[BaseException] = []
    try:
        listener.bind(str(sock_path))
        listener.listen(1)

        def pump() -> None:
            try:
                conn, _ = listener.accept()
                with conn:
                    copied.append(_pump(conn.fileno(), stream))
            except BaseException as exc:  # reported by the caller
                failure.append(exc)
        thread = threading.Thread(target=pump, name="vmanager-migrate-out", daemon=True)
        thread.start()
        m.qmp("migrate-set-capabilities",
              {"capabilities": [{"capability": "events", "state": True},
                                {"capability": "pause-before-switchover",
                                 "state": bool(disks)}]})
        m.qmp("migrate-set-parameters", {"max-bandwidth": bandwidth,
                                         "downtime-limit": downtime_ms})
        t0 = time.monotonic()
        if disks:
            mirror.start_mirrors(m, disks, timeout=timeout,
                                 progress=lambda data: _say(data, report))
        mirror_s = time.monotonic() - t0
        m.qmp("migrate", {"uri": f"unix:{sock_path}"})
        if disks:
            mirror.switch_over(m, disks, timeout=timeout)
        info = _wait_outgoing(m, timeout)
        thread.join(30)
        _end_stream(stream)  # the destination sees the end of the stream
        if failure:
            raise QemuError(f"{machine}: copying the migration stream failed: {failure[0]}")
        ram = info.get("ram") or {}
        result = {"machine": machine, "status": "completed",
                  "total_ms": int(info.get("total-time", 0)),
                  "downtime_ms": info.get("downtime"), "setup_ms": info.get("setup-time"),
                  "transferred": int(ram.get("transferred", 0)),
                  "stream_bytes": copied[0] if copied else 0,
                  "disks": [{"node": d["node"], "path": d["path"], "size": d["size"]}
                            for d in disks], "mirror_s": round(mirror_s, 3),
                  "wall_s": round(time.monotonic() - t0, 3)}
    except BaseException:
        with contextlib.suppress(VmanagerError):
            m.qmp("migrate_cancel")
        if disks:
            mirror.stop_mirrors(m, disks)
        with contextlib.suppress(VmanagerError):
            if m.qmp("query-status")["status"] in ("postmigrate", "paused"):
                m.qmp("cont")
        detach(m)
        raise
    finally:
        listener.close()
        sock_path.unlink(missing_ok=True)
    _say(result, report)
    verdict = control.readline().strip()
    if verdict != "commit":
        log.warning("%s: destination did not confirm (%r); resuming here", machine, verdict)
        m.qmp("cont")
        detach(m)
        raise StateError(f"migration of {machine} was not confirmed by the destination; "
                         f"{machine} keeps running on this server")
    _end_here(m, disks)
    return result


def _end_stream(fd: int) -> None:
    """Close ``fd`` so the reader sees EOF, also when it is one end of a socket that
    this process still holds as another descriptor (sshd may give a command one
    socketpair for both stdin and stdout)."""
    if stat.S_ISSOCK(os.fstat(fd).st_mode):
        sock = socket.socket(fileno=os.dup(fd))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        sock.close()
    os.close(fd)


def _wait_outgoing(m: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = m.qmp("query-migrate")
        status = info.get("status")
        # QEMU sets "completed" a moment before it fills in total-time and downtime
        if status == "completed" and (info.get("total-time") or
                                      time.monotonic() > deadline):
            return info
        if status in ("failed", "cancelled"):
            raise QemuError(f"{m.name}: migration {status}: {info.get('error-desc', status)}; "
                            f"{m.name} keeps running")
        if time.monotonic() > deadline:
            raise QemuError(f"{m.name}: migration did not finish within {timeout} s")
        time.sleep(_POLL)


def _end_here(m: Any, disks: list[dict[str, Any]]) -> None:
    """The guest runs elsewhere: end this QEMU without resuming it, remove its traces
    and the images of the disks that moved."""
    from vmanager.lab.runner import _remove
    name = m.name
    record = records.find(name)
    lab_name = record.lab if record is not None else None
    with contextlib.suppress(VmanagerError):
        m.qmp("quit")
    m.kill()
    if disks and record is not None:
        mirror.remove_source_disks(name, record.definition, disks)
    if lab_name is None:
        return
    rec = labrec.load(lab_name)
    item = rec.find("machine", name) if rec is not None else None
    if rec is not None and item is not None:
        _remove(item, lab=rec.name)
        rec.drop("machine", name)
