"""RAM of a Machine (``m.ram``): size, DIMM hot-plug, the balloon, ELF memory dumps.

``-m`` gets the base size plus hot-plug room (``maxmem``, ``slots``) and a
virtio balloon. DIMM ids are numbered after the ones QEMU already has (asked
over QMP each time), so a reattached machine never reuses one.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vmanager import validate
from vmanager.errors import ConfigError, HostError, QemuError, QMPError
from vmanager.machine import _jobs
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.machine.state import DumpCallback, DumpProgress, DumpResult, MemoryInfo
from vmanager.qemu import cmdline
from vmanager.qemu.qmp import map_qmp_errors

if TYPE_CHECKING:
    from vmanager.qemu.cmdline import MachineSpec

_MIB = 1 << 20
#: Linux adds hot-plugged memory in blocks of this many MiB on x86-64.
DIMM_GRANULE_MIB = 128
#: Hot-plug ceiling above ``memory`` unless ``max_memory`` is set before start (MiB).
DEFAULT_HOTPLUG_HEADROOM = 1024
#: DIMM slots for memory hot-plug.
DEFAULT_MEMORY_SLOTS = 8


class Memory(Part):
    """``size`` MiB at start; ``max_memory`` and ``slots`` bound hot-plug (set before start)."""

    key = "memory"

    def __init__(self, vm: MachineView, size: int | str) -> None:
        self._vm = vm
        self.size = validate.memory_mib(size)
        #: Memory hot-plug ceiling in MiB (``-m maxmem``); set before ``start_vm()``.
        self.max_memory: int | None = None
        #: DIMM slots for hot-plug (``-m slots``); set before ``start_vm()``.
        self.slots = DEFAULT_MEMORY_SLOTS

    def ceiling(self) -> int:
        """The hot-plug ceiling in MiB."""
        if self.max_memory is None:
            return self.size + DEFAULT_HOTPLUG_HEADROOM
        if self.max_memory < self.size:
            raise ConfigError(f"max_memory {self.max_memory} MiB is below memory "
                              f"{self.size} MiB")
        return self.max_memory

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """``-m`` with hot-plug room, and the balloon."""
        return replace(spec, memory=self.size, memory_slots=self.slots,
                       max_memory=self.ceiling(), balloon=True)

    def runtime(self) -> dict[str, int]:
        """The hot-plug bounds QEMU was started with."""
        return {"max_memory": self.ceiling(), "slots": self.slots}

    def restore(self, runtime: object) -> None:
        """Hot-plug bounds of a machine another process started."""
        if isinstance(runtime, dict):
            if isinstance(runtime.get("max_memory"), int):
                self.max_memory = runtime["max_memory"]
            if isinstance(runtime.get("slots"), int):
                self.slots = runtime["slots"]

    def info(self) -> MemoryInfo:
        """RAM now: base, hot-plugged, after the balloon, ceiling and free slots (MiB)."""
        return info(self)

    def increase(self, mib: int) -> MemoryInfo:
        """Hot-plug ``mib`` MiB of RAM (a ``pc-dimm``); see :meth:`Machine.increase_ram`."""
        return increase(self, mib)

    def balloon(self, mib: int, *, timeout: float = 30.0) -> MemoryInfo:
        """Set the balloon target; see :meth:`Machine.balloon`."""
        return balloon(self, mib, timeout=timeout)

    def dump(self, path: Path, *, paging: bool = False, progress: DumpCallback | None = None,
             timeout: float = 600.0) -> DumpResult:
        """ELF dump of guest memory; see :meth:`Machine.dump_memory`."""
        return dump(self, path, paging=paging, progress=progress, timeout=timeout)


def _dimms(p: Memory) -> list[str]:
    vm = p._vm
    return [str(d.get("data", {}).get("id") or "")
            for d in vm.qmp("query-memory-devices") if d.get("type") == "dimm"]


def info(p: Memory) -> MemoryInfo:
    """What QEMU says about the machine's RAM."""
    vm = p._vm
    summary = vm.qmp("query-memory-size-summary")
    base = int(summary["base-memory"]) // _MIB
    plugged = int(summary.get("plugged-memory", 0)) // _MIB
    balloon: int | None
    try:
        balloon = int(vm.qmp("query-balloon")["actual"]) // _MIB
    except QMPError:
        balloon = None  # no balloon device, or the guest has not loaded its driver
    dimms = _dimms(p)
    return MemoryInfo(base=base, plugged=plugged, balloon=balloon, max=p.ceiling(),
                      free_slots=max(0, p.slots - len(dimms)))


def increase(p: Memory, mib: int) -> MemoryInfo:
    """Plug a DIMM of ``mib`` MiB; see :meth:`Machine.increase_ram`."""
    vm = p._vm
    if isinstance(mib, bool) or not isinstance(mib, int) or mib <= 0 or mib % DIMM_GRANULE_MIB:
        raise ConfigError(f"increase_ram takes a positive multiple of {DIMM_GRANULE_MIB} MiB "
                          f"(Linux onlines memory in {DIMM_GRANULE_MIB} MiB blocks), got {mib!r}")
    vm.require(State.RUNNING, State.PAUSED, action="increase RAM")
    now = info(p)
    if now.total + mib > now.max:
        raise ConfigError(f"machine {vm.name!r} has {now.total} MiB of at most {now.max} MiB; "
                          f"{mib} MiB more does not fit (set max_memory before start_vm())")
    if now.free_slots < 1:
        raise ConfigError(f"machine {vm.name!r} has no free memory slot (memory_slots="
                          f"{p.slots})")
    used = [cmdline.dimm_number(d) for d in _dimms(p)]
    n = max((u for u in used if u is not None), default=0) + 1
    backend, dimm = cmdline.dimm_ids(n)
    objects = _objects(p)
    while backend in objects:
        n += 1  # a backend left behind by a plug that failed half-way
        backend, dimm = cmdline.dimm_ids(n)
    with map_qmp_errors(f"{vm.name}: cannot allocate {mib} MiB for hot-plug", QemuError):
        vm.qmp("object-add", {"qom-type": "memory-backend-ram", "id": backend,
                             "size": mib * _MIB})
    with map_qmp_errors(f"{vm.name}: plugging a {mib} MiB DIMM failed"):
        try:
            vm.qmp("device_add", {"driver": "pc-dimm", "id": dimm, "memdev": backend})
        except QMPError:
            vm.quiet("object-del", {"id": backend})
            raise
    vm.log.info("hot-plugged %d MiB (%s)", mib, dimm)
    return info(p)


def balloon(p: Memory, mib: int, *, timeout: float = 30.0) -> MemoryInfo:
    """Set the balloon target; see :meth:`Machine.balloon`."""
    vm = p._vm
    if isinstance(mib, bool) or not isinstance(mib, int) or mib < 16:
        raise ConfigError(f"balloon takes a size in MiB of at least 16, got {mib!r}")
    vm.require(State.RUNNING, State.PAUSED, action="set the balloon")
    now = info(p)
    if mib > now.total:
        raise ConfigError(f"machine {vm.name!r} has {now.total} MiB; the balloon cannot give "
                          f"it {mib} MiB (use increase_ram)")
    with map_qmp_errors(f"{vm.name}: balloon failed", QemuError):
        vm.qmp("balloon", {"value": mib * _MIB})
    deadline = time.monotonic() + timeout
    while True:
        now = info(p)
        if now.balloon == mib or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def dump(p: Memory, path: Path, *, paging: bool, progress: DumpCallback | None,
         timeout: float) -> DumpResult:
    """ELF dump of guest memory to ``path``; see :meth:`Machine.dump_memory`."""
    vm = p._vm
    monitor = vm.monitor()
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
        with map_qmp_errors(f"{vm.name}: dump-guest-memory failed", QemuError):
            vm.qmp("dump-guest-memory", {"paging": paging, "protocol": f"fd:{fdname}",
                                        "detach": True, "format": "elf"})
        handed = False  # QEMU took the fd over
        deadline = started + timeout
        while True:
            events = [e for e in monitor.events(mark) if e.get("event") == "DUMP_COMPLETED"]
            if events:
                result = events[0].get("data", {})
                if result.get("error"):
                    raise QemuError(f"{vm.name}: memory dump failed: {result['error']}")
                break
            state = vm.qmp("query-dump")
            if progress is not None:
                progress(DumpProgress(int(state.get("completed", 0)),
                                      int(state.get("total", 0))))
            if state.get("status") == "failed":
                raise QemuError(f"{vm.name}: memory dump failed (query-dump: failed)")
            if time.monotonic() > deadline:
                raise QemuError(f"{vm.name}: memory dump did not finish within {timeout} s")
            with contextlib.suppress(QemuError):
                monitor.wait_event("DUMP_COMPLETED", timeout=0.5, since=mark)
        os.fsync(fd)
        os.replace(tmp, target)
    finally:
        if handed:
            vm.quiet("closefd", {"fdname": fdname})
        os.close(fd)
        tmp.unlink(missing_ok=True)
    size = target.stat().st_size
    if progress is not None:
        progress(DumpProgress(size, size))
    vm.log.info("dumped memory to %s (%d bytes)", target, size)
    return DumpResult(path=target, size=size, seconds=time.monotonic() - started)


def _objects(p: Memory) -> set[str]:
    vm = p._vm
    return {str(o.get("name")) for o in vm.qmp("qom-list", {"path": "/objects"})}
