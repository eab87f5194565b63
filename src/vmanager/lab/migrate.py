"""Live migration of a lab machine from one server to another.

>>> report = lab.migrate("a", to="s2")          # doctest: +SKIP
>>> report.downtime_ms, report.total_ms          # doctest: +SKIP
(38, 412)

The orchestrating host starts ``vmanager migrate-receive`` on the destination
(it makes the machine's namespace and NICs on the stretched switches and an
incoming QEMU, then says it is ready) and ``vmanager migrate-send`` on the
source, and joins the source's standard output to the destination's standard
input: the RAM and device state travel inside the two SSH connections
(:mod:`vmanager.lab.migrate_ends`). The guest keeps its MAC addresses (they
derive from its name), hence its addresses; QEMU announces it on the
destination at once, so the switches learn where it went. Only when the
destination runs the guest is the source told to end it; otherwise it
resumes. The lab record here then places the machine on the new server,
which later ``up``, ``inspect`` and machine commands follow.

Disks: unless told the storage is shared, the destination makes each writable
disk anew (empty, same size and format, same path) and the source mirrors it
there before the RAM goes, through one more pair of SSH connections per disk
(:mod:`vmanager.lab.mirror`); the source's images are removed once the guest
runs on the destination. With ``shared_storage`` both QEMUs open the same files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmanager.errors import ConfigError, HostError, NotFoundError, QemuError
from vmanager.lab import mirror, multi
from vmanager.lab.remote import Remote, ssh_argv
from vmanager.lab.servers import ServerSpec
from vmanager.lab.spec import Lab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossMigration:
    """What a migration between servers did and how long it took."""

    machine: str
    source: str
    target: str
    total_ms: int             #: QEMU's total time of the migration
    downtime_ms: int | None   #: QEMU's measured downtime (guest paused)
    transferred: int          #: RAM bytes QEMU sent
    wall_s: float             #: the whole call, preparing the destination included
    #: the disks mirrored to the destination (node, path, size in bytes); empty when
    #: the machine has none or the storage is shared
    disks: list[dict[str, Any]] = field(default_factory=list)
    mirror_s: float = 0.0     #: until the mirrors were in step (before the RAM moved)


def migrate(lab: Lab, machine: str, *, to: str, timeout: float = 600.0,
            downtime_ms: int = 100, shared_storage: bool = False,
            progress: Callable[[str], None] | None = None) -> CrossMigration:
    """Move running ``machine`` of ``lab`` to server ``to``, live.

    Its writable disks are mirrored to ``to`` first and removed from the source
    afterwards, unless ``shared_storage`` says both servers see them at the same
    path. ``progress`` gets a line now and then while disks are copied.

    Raises:
        ConfigError: unknown machine or server, the machine is there already.
        StorageError (remote): a disk's file exists on ``to`` already (shared
            storage not declared?) or cannot be made there.
        RemoteNotFound: a switch the machine uses is not on ``to`` (stretch it
            there first: place a machine on it).
        NotFoundError: the lab is not up / the machine has no server here.
        ServerUnreachable, RemoteError: from either server.
        QemuError: the migration failed; the machine keeps running on its source.
    """
    t0 = time.monotonic()
    try:
        spec = lab.machine(machine)
    except KeyError:
        raise ConfigError(f"lab {lab.name!r} has no machine {machine!r}") from None
    servers = {s.name: s for s in lab.servers}
    if to not in servers:
        raise ConfigError(f"lab {lab.name!r} has no server {to!r}; servers: "
                          f"{', '.join(servers) or 'none'}")
    source = multi.server_of(machine)
    if source is None:
        raise NotFoundError(f"machine {machine!r} runs on no server of lab {lab.name!r} "
                            "(is the lab up? machines on the local host migrate with "
                            "Machine.migrate)")
    if source.name == to:
        raise ConfigError(f"machine {machine!r} is on server {to!r} already")
    # the destination itself refuses when a switch of the machine is not there
    src, dst = Remote(source), Remote(servers[to])
    src.check_version()
    dst.check_version()
    definition = json.dumps(spec.definition())
    disks: list[dict[str, Any]] = []
    if not shared_storage and (spec.disks or spec.guest not in (None, "tiny")):
        disks = list(src.call(["migrate-plan", machine], timeout=60)["disks"])
    extra = ["--mirror", json.dumps(disks)] if disks else []
    recv = subprocess.Popen(
        ssh_argv(dst.server, ["--json", "migrate-receive", lab.name, machine, "--definition",
                              definition, "--timeout", str(timeout), *extra]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    send: subprocess.Popen[bytes] | None = None
    relays: list[subprocess.Popen[bytes]] = []
    try:
        assert recv.stdin is not None and recv.stdout is not None
        ready = recv.stdout.readline()
        if not ready:
            raise _failed(dst, recv, "did not get ready")
        for d in disks:
            relays += _relay_pair(source, dst.server, machine, d["node"], timeout)
        send = subprocess.Popen(
            ssh_argv(source, ["--json", "migrate-send", machine, "--downtime-ms",
                              str(downtime_ms), "--timeout", str(timeout), *extra]),
            stdin=subprocess.PIPE, stdout=recv.stdin, stderr=subprocess.PIPE)
        recv.stdin.close()  # the source's ssh holds the write end now
        recv.stdin = None
        report_lines: list[bytes] = []
        assert send.stderr is not None
        errors = send.stderr

        def read() -> None:
            for line in errors:
                report_lines.append(line)
                _progress(line, machine, progress)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        _, err = recv.communicate(timeout=timeout)
        if recv.returncode != 0:
            _verdict(send, b"abort\n", timeout)
            reader.join(10)
            raise _failed(dst, recv, "could not take the machine", err,
                          b"".join(report_lines))
        _verdict(send, b"commit\n", timeout)
        reader.join(10)
        result = _report(report_lines)
        if send.returncode != 0 or result is None:
            raise QemuError(f"source server {source.name!r}: "
                            f"{b''.join(report_lines).decode(errors='replace')[-1500:]}")
    except BaseException:
        for proc in (send, recv, *relays):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        raise
    finally:
        _end_relays(relays)
    multi.move_machine(lab.name, machine, servers[to])
    wall = time.monotonic() - t0
    log.info("migrated %s from %s to %s: total %s ms, downtime %s ms, wall %.2f s", machine,
             source.name, to, result["total_ms"], result["downtime_ms"], wall)
    return CrossMigration(machine, source.name, to, int(result["total_ms"]),
                          result.get("downtime_ms"), int(result.get("transferred", 0)),
                          round(wall, 3), list(result.get("disks") or []),
                          float(result.get("mirror_s") or 0.0))


def _relay_pair(source: ServerSpec, target: ServerSpec, machine: str, node: str,
                timeout: float) -> list[subprocess.Popen[bytes]]:
    """Join the source's relay socket for disk ``node`` to the destination's NBD
    server: two SSH connections, two OS pipes between them, no copy in Python here."""
    to_target, from_source = os.pipe()
    to_source, from_target = os.pipe()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            ssh_argv(source, ["migrate-relay", machine, "--listen", mirror.relay_socket(node),
                              "--timeout", str(timeout)]),
            stdin=to_source, stdout=from_source, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ssh_argv(target, ["migrate-relay", machine, "--connect", mirror.EXPORT_SOCKET,
                              "--timeout", str(timeout)]),
            stdin=to_target, stdout=from_target, stderr=subprocess.DEVNULL))
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    finally:
        for fd in (to_target, from_source, to_source, from_target):
            os.close(fd)
    return procs


def _end_relays(relays: list[subprocess.Popen[bytes]]) -> None:
    """The NBD connections end with the mirrors; give the relays a moment, then end them."""
    deadline = time.monotonic() + 5
    for proc in relays:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _progress(line: bytes, machine: str, progress: Callable[[str], None] | None) -> None:
    try:
        data = json.loads(line)
    except ValueError:
        return
    if not isinstance(data, dict) or "mirror" not in data:
        return
    if data["mirror"] == "ready":
        text = f"{machine}: disks in step with the destination ({data.get('bytes', 0) >> 20} MiB)"
    else:
        text = (f"{machine}: mirroring {data['mirror']}: {int(data.get('done', 0)) >> 20} of "
                f"{int(data.get('total', 0)) >> 20} MiB")
    log.info("%s", text)
    if progress is not None:
        progress(text)


def _verdict(send: subprocess.Popen[bytes], word: bytes, timeout: float) -> None:
    assert send.stdin is not None
    try:
        send.stdin.write(word)
        send.stdin.close()
    except BrokenPipeError:
        pass
    send.wait(timeout)


def _report(lines: list[bytes]) -> dict[str, Any] | None:
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("status") == "completed":
            return data
    return None


def _failed(dst: Remote, recv: subprocess.Popen[bytes], what: str, err: bytes = b"",
            source_said: bytes = b"") -> HostError:
    if recv.poll() is None:
        recv.kill()
    _, rest = recv.communicate()
    message = _error_of(err + rest)
    extra = _error_of(source_said) if source_said.strip() else ""
    return HostError(f"destination server {dst.server.name!r} {what}: {message[-1500:]}"
                     + (f"\nsource said: {extra[-800:]}" if extra else "")
                     + "\nthe machine keeps running on its source")


def _error_of(output: bytes) -> str:
    """The last ``error`` of the JSON objects a remote vmanager printed (its
    ``--json`` errors span several lines), else the output's tail."""
    text = output.decode(errors="replace").strip()
    decoder = json.JSONDecoder()
    found, at = None, 0
    while (start := text.find("{", at)) != -1:
        try:
            data, at = decoder.raw_decode(text, start)
        except ValueError:
            at = start + 1
            continue
        if isinstance(data, dict) and "error" in data:
            found = str(data["error"])
    return found if found is not None else text[-1500:]
