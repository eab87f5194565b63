"""A machine's disks moving with it between servers that share no storage.

QEMU's documented procedure for live migration with non-shared storage
(docs/interop/live-block-operations, and what libvirt's ``--copy-storage-all``
does), with every byte inside the lab's SSH connections:

1. The source lists its writable disks and their virtual sizes (:func:`plan`,
   from the running QEMU's ``query-block``).
2. The destination creates each one as a new, empty image of the same size and
   format at the same path (:func:`create_disks`; refused if a file is there:
   that is shared storage, or somebody's file), starts the incoming QEMU on
   them and exports them writable from QEMU's NBD server on a unix socket in
   the machine's owner-only run directory (:func:`export`). No TCP port.
3. Per disk the orchestrating host joins two ``vmanager migrate-relay``
   processes (one per server, each on an SSH connection) with two OS pipes: the
   source's relay listens on a unix socket in the machine's run directory, the
   destination's relay connects to the NBD socket (:func:`vmanager.lab.relay.relay`).
4. The source adds an NBD client node on its relay's socket and runs
   ``blockdev-mirror sync=full`` into it for each disk; once every job is
   ready (source and copy in step, guest writes mirrored as they come) the RAM
   migration starts with ``pause-before-switchover``. When the guest is paused
   for the last copy, the jobs are cancelled -- a ready mirror that is
   cancelled completes with the target an exact copy -- and only then does the
   device state go, so the destination never runs on a stale disk
   (:func:`start_mirrors`, :func:`switch_over`). The source's own images stay
   untouched: if anything fails, it resumes on them.
5. Once the destination runs the guest, the source's images are removed
   (:func:`remove_source_disks`): the disk moved, as with Proxmox's
   ``qm migrate --with-local-disks``; a copy left behind would stop the machine
   from ever moving back.

Read-only media (a CD, the kernel and initrd) are not copied: they must exist
at the same path on the destination, which checks before it starts anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, NotFoundError, QemuError, StorageError, VmanagerError

log = logging.getLogger(__name__)

EXPORT_SOCKET = "nbd.sock"           #: the destination QEMU's NBD server, in its run dir
_NODE = re.compile(r"^disk\d{1,3}$")  # vmanager's disk node names (qemu.blockdev.disk_id)
_POLL = 0.05


def relay_socket(node: str) -> str:
    """The source relay's socket for disk ``node``, in the machine's run directory."""
    return f"nbd-out-{node}.sock"


# -- 1. the source's disks -----------------------------------------------------------------

def plan(m: Any) -> list[dict[str, Any]]:
    """The running machine's writable disks: node, image path, format, virtual size (bytes)."""
    out = []
    for dev in m.qmp("query-block"):
        ins = dev.get("inserted")
        if not isinstance(ins, dict) or ins.get("ro"):
            continue
        node = str(ins.get("node-name", ""))
        image = ins.get("image") or {}
        if not _NODE.match(node):
            # not a disk of the definition (e.g. UEFI variables in a pflash, whose
            # contents travel with the RAM): the destination makes its own
            log.info("%s: block device %s (%s) is not mirrored", m.name,
                     dev.get("device") or dev.get("qdev"), node)
            continue
        out.append({"node": node, "path": str(ins.get("file", "")),
                    "format": str(image.get("format", ins.get("drv", ""))),
                    "size": int(image["virtual-size"])})
    return out


# -- 2. the destination's disks ------------------------------------------------------------

def _check_plan(disks: Any) -> list[dict[str, Any]]:
    if not isinstance(disks, list):
        raise ConfigError("the disk plan must be a list")
    out = []
    for d in disks:
        if not (isinstance(d, dict) and isinstance(d.get("node"), str)
                and _NODE.match(d["node"]) and isinstance(d.get("size"), int)
                and d["size"] > 0 and d.get("format") in ("qcow2", "raw")
                and isinstance(d.get("path"), str)):
            raise ConfigError(f"bad entry in the disk plan: {d!r}")
        out.append(d)
    return out


def destination_paths(name: str, definition: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Disk node -> (image path here, made by :func:`create_disks`), as ``machine_kwargs``
    will attach them: an image guest's overlay first (made by the machine's start,
    on the image built here), then the lab's disks."""
    from vmanager.state.persist import image_overlay_path
    found: dict[str, tuple[str, bool]] = {}
    guest = definition.get("guest")
    index = 0
    if guest is not None and guest != "tiny":
        found[f"disk{index}"] = (str(image_overlay_path(name, str(guest))), False)
        index += 1
    for disk in definition.get("disks") or ():
        found[f"disk{index}"] = (str(disk["path"]), True)
        index += 1
    return found


def check_media(definition: Mapping[str, Any]) -> None:
    """Read-only files the machine needs must already be here (they are not copied)."""
    for key in ("kernel", "initrd", "cd"):
        value = definition.get(key)
        if value and not Path(value).is_file():
            raise NotFoundError(f"the machine's {key} {value} is not on this server; "
                                "read-only media are not copied: put it at the same path")


def create_disks(name: str, definition: Mapping[str, Any], disks: Any,
                 made: list[Path]) -> None:
    """Make the new, empty images the source's disks are mirrored into.

    Each path made (or about to be made by the machine's start: an image
    guest's overlay) is appended to ``made`` at once, for the caller to remove
    on failure. Raises :class:`StorageError` naming the disk when its file
    exists already (shared storage, or not ours) or cannot be made.
    """
    from vmanager.storage import Harddrive
    wanted = destination_paths(name, definition)
    for d in _check_plan(disks):
        if d["node"] not in wanted:
            raise ConfigError(f"disk {d['node']} ({d['path']}) of {name!r} is not in the "
                              "machine's definition")
        path, ours = wanted[d["node"]]
        target = Path(path)
        if target.exists() or target.is_symlink():
            raise StorageError(f"disk {d['node']} of {name!r}: {path} exists on this server "
                               "already; if both servers share that storage, migrate with "
                               "--shared-storage, otherwise move that file away")
        if not ours:  # an image guest's overlay: the machine's start makes it
            made.append(target)  # not there before: removed again on failure
            continue
        if not target.parent.is_dir():
            raise StorageError(f"disk {d['node']} of {name!r}: cannot create {path}: "
                               f"directory {target.parent} does not exist on this server")
        try:
            Harddrive(target, format=d["format"], size=d["size"]).create()
        except OSError as exc:
            raise StorageError(f"disk {d['node']} of {name!r}: cannot create {path}: "
                               f"{exc}") from exc
        made.append(target)


def export(m: Any, disks: Sequence[Mapping[str, Any]]) -> None:
    """Serve the incoming machine's disks, writable, on its run dir's NBD socket."""
    if not disks:
        return
    sock = m.run_dir / EXPORT_SOCKET
    m.qmp("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}},
                               "max-connections": len(disks)})
    for d in disks:
        m.qmp("block-export-add", {"type": "nbd", "id": f"mig-{d['node']}",
                                   "node-name": d["node"], "name": d["node"],
                                   "writable": True})


def unexport(m: Any, disks: Sequence[Mapping[str, Any]]) -> None:
    """Stop serving the disks (best effort: the exports go with QEMU anyway)."""
    if not disks:
        return
    for d in disks:
        with contextlib.suppress(VmanagerError):
            m.qmp("block-export-del", {"id": f"mig-{d['node']}"})
    with contextlib.suppress(VmanagerError):
        m.qmp("nbd-server-stop")
    (m.run_dir / EXPORT_SOCKET).unlink(missing_ok=True)


# -- 4. the source's mirror jobs -----------------------------------------------------------

def _job(node: str) -> str:
    return f"mig-{node}"


def _target(node: str) -> str:
    return f"mig-nbd-{node}"


def start_mirrors(m: Any, disks: Sequence[Mapping[str, Any]], *, timeout: float,
                  progress: Callable[[dict[str, Any]], None]) -> None:
    """Mirror each disk into the destination's export; return once all are in step.

    Raises :class:`QemuError` naming the disk that could not be mirrored.
    """
    for d in disks:
        sock = m.run_dir / relay_socket(d["node"])
        deadline = time.monotonic() + min(timeout, 60.0)
        while not sock.exists():
            if time.monotonic() > deadline:
                raise QemuError(f"{m.name}: disk {d['path']}: the relay to the destination "
                                "did not come up")
            time.sleep(_POLL)
        try:
            m.qmp("blockdev-add", {"driver": "nbd", "node-name": _target(d["node"]),
                                   "server": {"type": "unix", "path": str(sock)},
                                   "export": d["node"]})
            m.qmp("blockdev-mirror", {"job-id": _job(d["node"]), "device": d["node"],
                                      "target": _target(d["node"]), "sync": "full",
                                      "auto-dismiss": False})
        except VmanagerError as exc:
            raise QemuError(f"{m.name}: cannot mirror disk {d['path']} to the destination: "
                            f"{exc}") from exc
    deadline = time.monotonic() + timeout
    said = 0.0
    while True:
        jobs = _jobs(m, disks)
        if all(j.get("ready") for j in jobs.values()):
            progress({"mirror": "ready", "bytes": sum(int(j.get("len", 0))
                                                      for j in jobs.values())})
            return
        if time.monotonic() - said > 1.0:
            said = time.monotonic()
            for node, j in jobs.items():
                progress({"mirror": node, "done": int(j.get("offset", 0)),
                          "total": int(j.get("len", 0))})
        if time.monotonic() > deadline:
            raise QemuError(f"{m.name}: the disks were not in step with the destination "
                            f"within {timeout} s")
        time.sleep(_POLL)


def _jobs(m: Any, disks: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Our jobs by node; :class:`QemuError` naming the disk when one failed or vanished."""
    by_id = {j.get("device"): j for j in m.qmp("query-block-jobs")}
    out = {}
    for d in disks:
        j = by_id.get(_job(d["node"]))
        if j is None or j.get("error") or j.get("status") in ("aborting", "concluded",
                                                                "null"):
            why = (j or {}).get("error") or "the job ended"
            raise QemuError(f"{m.name}: mirroring disk {d['path']} ({d['node']}) to the "
                            f"destination failed: {why}")
        out[d["node"]] = j
    return out


def switch_over(m: Any, disks: Sequence[Mapping[str, Any]], *, timeout: float) -> None:
    """The guest is paused before the last copy: finish the mirrors, then let it go.

    Waits for ``pre-switchover``, cancels each ready job (which completes it with
    the target an exact copy), checks each ended without error, drops the NBD
    clients and continues the migration.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = m.qmp("query-migrate")
        status = info.get("status")
        if status == "pre-switchover":
            break
        if status in ("failed", "cancelled", "completed"):
            raise QemuError(f"{m.name}: migration {status} before the disks were switched "
                            f"over: {info.get('error-desc', status)}")
        if time.monotonic() > deadline:
            raise QemuError(f"{m.name}: migration did not converge within {timeout} s")
        time.sleep(0.01)
    _jobs(m, disks)  # all still healthy
    for d in disks:
        m.qmp("block-job-cancel", {"device": _job(d["node"])})
    pending = {_job(d["node"]): d for d in disks}
    while pending:
        for j in m.qmp("query-block-jobs"):
            disk = pending.get(j.get("device"))
            if disk is None or j.get("status") != "concluded":
                continue
            if j.get("error"):
                raise QemuError(f"{m.name}: the last copy of disk {disk['path']} "
                                f"({disk['node']}) failed: {j['error']}")
            m.qmp("job-dismiss", {"id": j["device"]})
            del pending[j["device"]]
        if pending and time.monotonic() > deadline:
            raise QemuError(f"{m.name}: the disks' last copy did not finish within "
                            f"{timeout} s")
        time.sleep(0.005)
    for d in disks:
        m.qmp("blockdev-del", {"node-name": _target(d["node"])})
    m.qmp("migrate-continue", {"state": "pre-switchover"})


def stop_mirrors(m: Any, disks: Sequence[Mapping[str, Any]]) -> None:
    """Undo :func:`start_mirrors` on failure (best effort): the source's images were
    never changed by it, only copied from."""
    for d in disks:
        with contextlib.suppress(VmanagerError):
            m.qmp("block-job-cancel", {"device": _job(d["node"]), "force": True})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            ours = [j for j in m.qmp("query-block-jobs")
                    if j.get("device") in {_job(d["node"]) for d in disks}]
        except VmanagerError:
            break
        for j in ours:
            if j.get("status") == "concluded":
                with contextlib.suppress(VmanagerError):
                    m.qmp("job-dismiss", {"id": j["device"]})
        if not ours:
            break
        time.sleep(_POLL)
    for d in disks:
        with contextlib.suppress(VmanagerError):
            m.qmp("blockdev-del", {"node-name": _target(d["node"])})


# -- 5. after the move -----------------------------------------------------------------------

def remove_source_disks(name: str, definition: Mapping[str, Any],
                        disks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Remove the images the destination now holds; only paths the machine's
    definition names (or its image overlay), never anything else."""
    known = {node: path for node, (path, _) in destination_paths(name, definition).items()}
    removed = []
    for d in disks:
        if known.get(d["node"]) != d["path"]:
            log.warning("%s: disk %s is %s, not the definition's %s; left in place", name,
                        d["node"], d["path"], known.get(d["node"]))
            continue
        try:
            os.unlink(d["path"])
            removed.append(d["path"])
        except OSError as exc:
            log.warning("%s: could not remove the moved disk %s: %s", name, d["path"], exc)
    return removed
