"""Live migration between Machines, and saving / restoring a machine's state to a file.

The destination is a second QEMU started with ``-incoming defer``; it gets the
stream with ``migrate-incoming`` over a unix socket in its run directory or TCP
on 127.0.0.1, and a state file arrives as a file descriptor (``getfd`` +
``fd:``), so no shell (``exec:``) is ever involved. The source is watched with
``query-migrate``; when anything fails the destination is killed and the
source, which QEMU resumes after a failed migration, keeps running.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vmanager.errors import ConfigError, HostError, NotFoundError, QemuError, QMPError, StateError
from vmanager.machine import _jobs, _migtls
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.machine.state import MigrationProgress, MigrationResult, ProgressCallback
from vmanager.qemu import launch

if TYPE_CHECKING:
    from vmanager.machine.disks import Disks
    from vmanager.qemu.cmdline import MachineSpec

TRANSPORTS = ("unix", "tcp")
#: Default bandwidth cap: effectively none (QEMU's default, 128 MiB/s, slows big guests).
DEFAULT_BANDWIDTH_MIB = 10240
_POLL = 0.1


class Migration(Part):
    """Whether the next start waits for an incoming migration (``-incoming defer``).

    ``settled`` is the Machine's own step once incoming state has arrived: the
    guest is already up, so its shell will not greet again.
    """

    key = "migration"

    def __init__(self, vm: MachineView, settled: Callable[[], None]) -> None:
        self.vm = vm
        self.incoming = False
        self._settled = settled

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """``-incoming defer`` for a destination."""
        return replace(spec, incoming=self.incoming)

    def teardown(self) -> None:
        """The next start is an ordinary one."""
        self.incoming = False

    def settle(self) -> None:
        """Incoming state arrived: the machine runs the migrated guest."""
        self.incoming = False
        self._settled()


class Migratable(Protocol):
    """What migration needs of a Machine at each end."""

    @property
    def name(self) -> str:
        """The machine's name."""

    @property
    def state(self) -> State:
        """The machine's lifecycle state."""

    @property
    def disks(self) -> Disks:
        """Its harddrives."""

    @property
    def migration(self) -> Migration:
        """Its migration part."""

    def start_vm(self, *, timeout: float = 30.0) -> None:
        """Start QEMU."""

    def kill(self) -> None:
        """SIGKILL QEMU and clean up."""

    def is_alive(self) -> bool:
        """Whether QEMU runs."""


def migrate(src: Migratable, dst: Migratable, *, transport: str,
            progress: ProgressCallback | None, timeout: float, bandwidth_mib: int | None,
            downtime_ms: int) -> MigrationResult:
    """See :meth:`Machine.migrate`."""
    if not isinstance(getattr(dst, "migration", None), Migration):
        raise ConfigError(f"migrate takes a Machine to migrate into, got {dst!r}")
    if dst is src:
        raise ConfigError(f"cannot migrate machine {src.name!r} into itself")
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    src.migration.vm.require(State.RUNNING, State.PAUSED, action="migrate")
    if dst.state in (State.RUNNING, State.PAUSED):
        raise StateError(f"target machine {dst.name!r} is {dst.state.value}; migrate needs a "
                         "stopped Machine to start as the destination", state=dst.state,
                         required=State.DEFINED)
    shared = _hand_over_drives(src, dst)
    dst.migration.incoming = True
    try:
        dst.start_vm()
    except BaseException:
        _take_back_drives(src, shared)
        raise
    try:
        _check_same_devices(src, dst)
        for m in (src, dst):
            m.migration.vm.qmp("migrate-set-capabilities",
                  {"capabilities": [{"capability": "events", "state": True}]})
        src.migration.vm.qmp("migrate-set-parameters",
                {"max-bandwidth": (bandwidth_mib or DEFAULT_BANDWIDTH_MIB) << 20,
                 "downtime-limit": downtime_ms})
        if transport == "unix":
            uri = f"unix:{dst.migration.vm.run_dir / 'migrate.sock'}"
            dst.migration.vm.qmp("migrate-incoming", {"uri": uri})
        else:  # any local user can connect to it: TLS with a one-time key
            _migtls.authenticate(src.migration.vm, dst.migration.vm)
            dst.migration.vm.qmp("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
            uri = _incoming_tcp_uri(dst)
        src.migration.vm.log.info("migrating to %s over %s", dst.name, uri)
        result = _run_outgoing(src, uri, progress=progress, timeout=timeout,
                               peer=dst, target=dst.name)
        _wait_incoming_done(dst, timeout=60.0)
    except BaseException as exc:
        tail = _log_tail(dst)
        if transport == "tcp":
            _migtls.release(src.migration.vm, dst=dst.migration.vm)
        dst.kill()
        _take_back_drives(src, shared)
        if isinstance(exc, QMPError):
            raise QemuError(f"migration of {src.name} to {dst.name} failed: "
                            f"{exc.description}; {src.name} keeps running"
                            + (f"\ndestination QEMU said:\n{tail}" if tail else "")) from exc
        if isinstance(exc, QemuError) and tail:
            raise QemuError(f"{exc}\ndestination QEMU said:\n{tail}") from exc
        raise
    if transport == "tcp":
        _migtls.release(dst.migration.vm, dst=dst.migration.vm)
    _settle_destination(dst)
    _finish_source(src)
    return result


def save(m: Migratable, path: Path, *, keep_running: bool,
         progress: ProgressCallback | None, timeout: float,
         ignore_shared: bool = False) -> MigrationResult:
    """See :meth:`Machine.save_state`.

    ``ignore_shared``: RAM in a shared file is left out (QEMU's ``x-ignore-shared``);
    a template's device state.
    """
    monitor = m.migration.vm.monitor()
    target = Path(os.path.abspath(path))
    fd, tmp = _jobs.temp_beside(target, "machine state")
    fdname = f"vm-save-{os.getpid()}-{fd}"
    was_running = m.state == State.RUNNING
    try:
        monitor.send_fd(fd, fdname)
        _set_capabilities(m, ignore_shared=ignore_shared)
        m.migration.vm.qmp("migrate-set-parameters", {"max-bandwidth": DEFAULT_BANDWIDTH_MIB << 20})
        try:
            result = _run_outgoing(m, f"fd:{fdname}", progress=progress, timeout=timeout,
                                   peer=None, target=str(target))
        finally:
            m.migration.vm.quiet("closefd", {"fdname": fdname})  # QEMU has usually taken it already
        os.fsync(fd)
        os.replace(tmp, target)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
    m.migration.vm.log.info("saved state to %s (%d bytes)", target, target.stat().st_size)
    if keep_running:
        if was_running:
            m.migration.vm.qmp("cont")
    else:
        _finish_source(m)
    return result


def restore(m: Migratable, path: Path, *, timeout: float, ignore_shared: bool = False,
            check: Callable[[], None] | None = None) -> None:
    """See :meth:`Machine.restore_state`.

    ``ignore_shared``: the state leaves RAM out (a template's); ``check`` runs once
    QEMU is up, before the state is loaded (it raises to refuse).
    """
    source = Path(os.path.abspath(path))
    if not source.is_file():
        raise NotFoundError(f"machine state file {source} does not exist")
    if m.state in (State.RUNNING, State.PAUSED):
        raise StateError(f"machine {m.name!r} is {m.state.value}; restore_state starts a "
                         "stopped machine", state=m.state, required=State.DEFINED)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HostError(f"cannot read machine state {source}: {exc.strerror}") from exc
    try:
        m.migration.incoming = True
        m.start_vm()
        try:
            if check is not None:
                check()
            fdname = f"vm-restore-{os.getpid()}-{fd}"
            m.migration.vm.monitor().send_fd(fd, fdname)
            _set_capabilities(m, ignore_shared=ignore_shared)
            m.migration.vm.qmp("migrate-incoming", {"uri": f"fd:{fdname}"})
            _wait_incoming_done(m, timeout=timeout)
        except BaseException as exc:
            tail = _log_tail(m)
            m.kill()
            if isinstance(exc, QemuError):
                raise QemuError(f"{m.name}: restoring state from {source} failed: {exc}"
                                + (f"\nQEMU said:\n{tail}" if tail else "")) from exc
            raise
    finally:
        os.close(fd)
    _settle_destination(m)
    m.migration.vm.log.info("restored state from %s", source)


# -- helpers -----------------------------------------------------------------------------
def _set_capabilities(m: Migratable, *, ignore_shared: bool) -> None:
    caps = [{"capability": "events", "state": True}]
    if ignore_shared:
        caps.append({"capability": "x-ignore-shared", "state": True})
    m.migration.vm.qmp("migrate-set-capabilities", {"capabilities": caps})


def _run_outgoing(m: Migratable, uri: str, *, progress: ProgressCallback | None,
                  timeout: float, peer: Migratable | None, target: str) -> MigrationResult:
    """Start ``migrate`` to ``uri`` and watch it; cancel it on timeout or error."""
    m.migration.vm.qmp("migrate", {"uri": uri})
    deadline = time.monotonic() + timeout
    try:
        while True:
            info = m.migration.vm.qmp("query-migrate")
            status = str(info.get("status", "none"))
            ram = info.get("ram") or {}
            if progress is not None and ram:
                progress(MigrationProgress(status=status,
                                           transferred=int(ram.get("transferred", 0)),
                                           remaining=int(ram.get("remaining", 0)),
                                           total=int(ram.get("total", 0)),
                                           dirty_rate=int(ram.get("dirty-pages-rate", 0))))
            # QEMU reports "completed" a moment before it fills in total-time and
            # downtime (both 0 until then): poll once more rather than report 0 ms
            if status == "completed" and (info.get("total-time") or
                                          time.monotonic() > deadline):
                return MigrationResult(target=target, total_ms=int(info.get("total-time", 0)),
                                       downtime_ms=info.get("downtime"),
                                       transferred=int(ram.get("transferred", 0)))
            if status in ("failed", "cancelled"):
                why = info.get("error-desc", status)
                raise QemuError(f"{m.name}: migration to {target} {status}: {why}; "
                                f"{m.name} keeps running")
            if peer is not None and not peer.is_alive():
                raise QemuError(f"{m.name}: destination {peer.name} exited during migration; "
                                f"{m.name} keeps running")
            if time.monotonic() > deadline:
                raise QemuError(f"{m.name}: migration to {target} did not finish within "
                                f"{timeout} s (status {status}); cancelled, {m.name} keeps "
                                "running")
            time.sleep(_POLL)
    except BaseException:
        _cancel(m)
        raise


def _cancel(m: Migratable) -> None:
    """Cancel an outgoing migration and wait until the source runs on its own again."""
    m.migration.vm.quiet("migrate_cancel", {})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status = m.migration.vm.qmp("query-migrate").get("status")
        except QemuError:
            return
        if status in ("cancelled", "failed", "completed", "none", None):
            return
        time.sleep(_POLL)


def _incoming_tcp_uri(dst: Migratable) -> str:
    """The port QEMU picked for ``tcp:127.0.0.1:0`` (``query-migrate`` socket-address)."""
    for addr in dst.migration.vm.qmp("query-migrate").get("socket-address", []):
        if addr.get("type") == "inet":
            return f"tcp:127.0.0.1:{addr['port']}"
    raise QemuError(f"{dst.name}: the incoming migration listener has no TCP address")


def _wait_incoming_done(m: Migratable, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not m.is_alive():
            raise QemuError(f"{m.name}: QEMU exited while receiving the machine state")
        status = str(m.migration.vm.qmp("query-status")["status"])
        if status != "inmigrate":
            if status in ("running", "paused", "postmigrate"):
                return
            raise QemuError(f"{m.name}: incoming migration ended in state {status}")
        if time.monotonic() > deadline:
            raise QemuError(f"{m.name}: incoming state did not arrive within {timeout} s")
        time.sleep(_POLL)


def _settle_destination(m: Migratable) -> None:
    """The guest is already up: its shell will not greet again; track its run state."""
    m.migration.settle()


def _finish_source(m: Migratable) -> None:
    """The guest lives elsewhere now: end the source QEMU without resuming it.

    ``stop()`` would resume the guest to power it off, which must not happen
    to a migrated source whose disks the destination now owns.
    """
    m.migration.vm.quiet("quit", {})
    m.kill()


def device_map(m: Migratable) -> dict[str, str]:
    found: dict[str, str] = {}
    for prop in m.migration.vm.qmp("qom-list", {"path": "/machine/peripheral"}):
        kind = str(prop.get("type", ""))
        if kind.startswith("child<"):
            found[str(prop["name"])] = kind[6:-1]
    return found


def _flash_drives(m: Migratable) -> int:
    """How many of the machine's flash chips (UEFI code, variables) have a drive."""
    count = 0
    for chip in ("system.flash0", "system.flash1"):
        try:  # a machine that boots SeaBIOS has no flash device at all
            drive = m.migration.vm.qmp("qom-get", {"path": f"/machine/{chip}",
                                                   "property": "drive"})
        except QemuError:
            continue
        count += bool(drive)
    return count


def memory_map(m: Migratable) -> dict[str, Any]:
    summary = m.migration.vm.qmp("query-memory-size-summary")
    return {"base-memory": summary.get("base-memory"),
            "plugged-memory": summary.get("plugged-memory", 0)}


def device_problems(want: dict[str, str], have: dict[str, str], *, who: str) -> list[str]:
    """What ``who``'s devices ``have`` lack, add or change against ``want`` (id: type)."""
    missing = sorted(f"{k} ({v})" for k, v in want.items() if k not in have)
    extra = sorted(f"{k} ({v})" for k, v in have.items() if k not in want)
    differ = sorted(f"{k} ({want[k]} vs {have[k]})"
                    for k in want.keys() & have.keys() if want[k] != have[k])
    return ([f"{who} lacks {', '.join(missing)}"] if missing else []) + \
           ([f"{who} has extra {', '.join(extra)}"] if extra else []) + \
           ([f"devices differ: {', '.join(differ)}"] if differ else [])


def _check_same_devices(src: Migratable, dst: Migratable) -> None:
    """Refuse before sending anything when the destination cannot take the guest."""
    problems = device_problems(device_map(src), device_map(dst), who=dst.name)
    fa, fb = _flash_drives(src), _flash_drives(dst)
    if fa != fb:  # the flash chips' RAM would be missing at one end
        problems.append(f"firmware differs: {src.name} has {fa or 'no'} flash drives, "
                        f"{dst.name} {fb or 'none'} (give both the same firmware=)")
    ma, mb = memory_map(src), memory_map(dst)
    if ma != mb:
        problems.append(f"memory differs: {src.name} {ma} vs {dst.name} {mb}")
    if problems:
        raise ConfigError(f"cannot migrate {src.name} to {dst.name}: " + "; ".join(problems)
                          + f". {src.name} keeps running")


def _hand_over_drives(src: Migratable, dst: Migratable) -> list[Any]:
    """Disks both machines name are shared storage: let the destination attach them."""
    return src.disks.hand_over(dst.disks)


def _take_back_drives(src: Migratable, shared: list[Any]) -> None:
    src.disks.take_back(shared)


def _log_tail(m: Migratable) -> str:
    return launch.log_tail(m.migration.vm.run_dir / "qemu.log")
