"""RAM of a running machine: DIMM hot-plug, the balloon, and ELF memory dumps."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vmanager.errors import ConfigError, HostError, QemuError, QMPError
from vmanager.machine import _jobs
from vmanager.machine.base import State
from vmanager.machine.state import DumpCallback, DumpProgress, DumpResult, MemoryInfo

if TYPE_CHECKING:
    from vmanager.machine.storage import StorageMixin

_MIB = 1 << 20
#: Linux adds hot-plugged memory in blocks of this many MiB on x86-64.
DIMM_GRANULE_MIB = 128


def info(m: StorageMixin) -> MemoryInfo:
    """What QEMU says about the machine's RAM."""
    summary = m.qmp("query-memory-size-summary")
    base = int(summary["base-memory"]) // _MIB
    plugged = int(summary.get("plugged-memory", 0)) // _MIB
    balloon: int | None
    try:
        balloon = int(m.qmp("query-balloon")["actual"]) // _MIB
    except QMPError:
        balloon = None  # no balloon device, or the guest has not loaded its driver
    dimms = [d for d in m.qmp("query-memory-devices") if d.get("type") == "dimm"]
    return MemoryInfo(base=base, plugged=plugged, balloon=balloon, max=m._max_memory(),
                      free_slots=max(0, m.memory_slots - len(dimms)))


def increase(m: StorageMixin, mib: int) -> MemoryInfo:
    """Plug a DIMM of ``mib`` MiB; see :meth:`StorageMixin.increase_ram`."""
    if isinstance(mib, bool) or not isinstance(mib, int) or mib <= 0 or mib % DIMM_GRANULE_MIB:
        raise ConfigError(f"increase_ram takes a positive multiple of {DIMM_GRANULE_MIB} MiB "
                          f"(Linux onlines memory in {DIMM_GRANULE_MIB} MiB blocks), got {mib!r}")
    m._require_state(State.RUNNING, State.PAUSED, action="increase RAM")
    now = info(m)
    if now.total + mib > now.max:
        raise ConfigError(f"machine {m.name!r} has {now.total} MiB of at most {now.max} MiB; "
                          f"{mib} MiB more does not fit (set max_memory before start_vm())")
    if now.free_slots < 1:
        raise ConfigError(f"machine {m.name!r} has no free memory slot (memory_slots="
                          f"{m.memory_slots})")
    n = next(m._dimms)
    backend, dimm = f"mem-hp{n}", f"dimm-hp{n}"
    try:
        m.qmp("object-add", {"qom-type": "memory-backend-ram", "id": backend,
                             "size": mib * _MIB})
    except QMPError as exc:
        raise QemuError(f"{m.name}: cannot allocate {mib} MiB for hot-plug: "
                        f"{exc.description}") from exc
    try:
        m.qmp("device_add", {"driver": "pc-dimm", "id": dimm, "memdev": backend})
    except QMPError as exc:
        m._quiet("object-del", {"id": backend})
        raise QemuError(f"{m.name}: plugging a {mib} MiB DIMM failed: "
                        f"{exc.description}") from exc
    m.log.info("hot-plugged %d MiB (%s)", mib, dimm)
    return info(m)


def balloon(m: StorageMixin, mib: int, *, timeout: float = 30.0) -> MemoryInfo:
    """Set the balloon target; see :meth:`StorageMixin.balloon`."""
    if isinstance(mib, bool) or not isinstance(mib, int) or mib < 16:
        raise ConfigError(f"balloon takes a size in MiB of at least 16, got {mib!r}")
    m._require_state(State.RUNNING, State.PAUSED, action="set the balloon")
    now = info(m)
    if mib > now.total:
        raise ConfigError(f"machine {m.name!r} has {now.total} MiB; the balloon cannot give "
                          f"it {mib} MiB (use increase_ram)")
    try:
        m.qmp("balloon", {"value": mib * _MIB})
    except QMPError as exc:
        raise QemuError(f"{m.name}: balloon failed: {exc.description}") from exc
    deadline = time.monotonic() + timeout
    while True:
        now = info(m)
        if now.balloon == mib or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def dump(m: StorageMixin, path: Path, *, paging: bool, progress: DumpCallback | None,
         timeout: float) -> DumpResult:
    """ELF dump of guest memory to ``path``; see :meth:`StorageMixin.dump_memory`."""
    monitor = m._require_monitor()
    target = Path(os.path.abspath(path))
    if target.is_dir():
        raise HostError(f"cannot dump memory to {target}: it is a directory")
    # Written beside the target and renamed, so a failure never leaves a partial dump.
    fd, tmp = _jobs.temp_beside(target, "a memory dump")
    fdname = f"vm-dump-{os.getpid()}-{fd}"
    started = time.monotonic()
    handed = False
    try:
        monitor.send_fd(fd, fdname)
        handed = True
        mark = monitor.event_mark()
        try:
            m.qmp("dump-guest-memory", {"paging": paging, "protocol": f"fd:{fdname}",
                                        "detach": True, "format": "elf"})
        except QMPError as exc:
            raise QemuError(f"{m.name}: dump-guest-memory failed: {exc.description}") from exc
        handed = False  # QEMU took the fd over
        deadline = started + timeout
        while True:
            events = [e for e in monitor.events(mark) if e.get("event") == "DUMP_COMPLETED"]
            if events:
                result = events[0].get("data", {})
                if result.get("error"):
                    raise QemuError(f"{m.name}: memory dump failed: {result['error']}")
                break
            state = m.qmp("query-dump")
            if progress is not None:
                progress(DumpProgress(int(state.get("completed", 0)),
                                      int(state.get("total", 0))))
            if state.get("status") == "failed":
                raise QemuError(f"{m.name}: memory dump failed (query-dump: failed)")
            if time.monotonic() > deadline:
                raise QemuError(f"{m.name}: memory dump did not finish within {timeout} s")
            with contextlib.suppress(QemuError):
                monitor.wait_event("DUMP_COMPLETED", timeout=0.5, since=mark)
        os.fsync(fd)
        os.replace(tmp, target)
    finally:
        if handed:
            m._quiet("closefd", {"fdname": fdname})
        os.close(fd)
        tmp.unlink(missing_ok=True)
    size = target.stat().st_size
    if progress is not None:
        progress(DumpProgress(size, size))
    m.log.info("dumped memory to %s (%d bytes)", target, size)
    return DumpResult(path=target, size=size, seconds=time.monotonic() - started)
