"""Start until QMP answers, boot to shell, and idle RSS: vmanager vs the raw argv."""

from __future__ import annotations

import time
from pathlib import Path

from bench.context import Context
from bench.core import Row, timer
from bench.rawqemu import RawQemu, rss_kib
from vmanager import Machine
from vmanager.guests import READY_LINE

SETTLE_S = 1.0  # let the idle guest settle before reading RSS


def _vm_start(ctx: Context, name: str) -> tuple[float, Machine]:
    m = Machine(name, **ctx.machine_args(name))
    try:
        with timer() as t:
            m.start_vm()
    except BaseException:
        m.kill()
        raise
    return t(), m


def _argv(ctx: Context) -> list[str]:
    _, m = _vm_start(ctx, "bench-argv")
    try:
        return list(m.argv)
    finally:
        m.kill()


def management_overhead(ctx: Context) -> list[Row]:
    """API call until QMP answers: ``Machine.start_vm()`` vs Popen + QMP handshake."""
    argv = _argv(ctx)
    n = ctx.reps(7, 25)
    vm: list[float] = []
    raw: list[float] = []
    for i in range(n + 1):  # the first pair warms caches and is dropped
        order = (0, 1) if i % 2 else (1, 0)
        for which in order:
            if which == 0:
                dt, m = _vm_start(ctx, "bench-mgmt")
                m.kill()
                sample = vm
            else:
                with RawQemu(argv, ctx.work / "raw-mgmt") as q, timer() as t:
                    q.launch()
                dt = t()
                sample = raw
            if i:
                sample.append(dt)
    row = Row("start until QMP answers", "ms", baseline_name="raw argv",
              goal="<= 1.2x raw QEMU")
    row.pair([x * 1000 for x in vm], [x * 1000 for x in raw])
    assert row.ratio is not None
    row.met = row.ratio.median <= 1.2
    row.note = ("nearly all of it is QEMU's own start (QMP answers once QEMU is initialised); "
                "ratio is the median of per-pair ratios, pairs alternate which goes first")
    return [row]


def boot_and_memory(ctx: Context) -> list[Row]:
    """Boot to shell (and RSS once idle): vmanager vs the raw argv reading the ready line."""
    argv = _argv(ctx)
    n = ctx.reps(2, 7)
    boot_vm: list[float] = []
    boot_raw: list[float] = []
    rss_vm: list[float] = []
    rss_raw: list[float] = []
    for i in range(n):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            if which == 0:
                m = Machine("bench-boot", **ctx.machine_args("bench-boot"))
                try:
                    with timer() as t:
                        m.start_vm()
                        m.wait_ready()
                    boot_vm.append(t())
                    ctx.cold_boots.append(t())
                    time.sleep(SETTLE_S)
                    assert m.pid is not None
                    rss_vm.append(rss_kib(m.pid) / 1024)
                finally:
                    m.kill()
            else:
                with RawQemu(argv, ctx.work / "raw-boot") as q:
                    with timer() as t:
                        q.launch()
                        q.connect_serial()
                        q.wait_serial(READY_LINE)
                    boot_raw.append(t())
                    time.sleep(SETTLE_S)
                    rss_raw.append(rss_kib(q.pid) / 1024)
    accel = ctx.accel.upper()
    boot = Row(f"boot to shell ({accel})", "s", baseline_name="raw argv to ready line",
               goal="<= 1.05x raw argv")
    boot.pair(boot_vm, boot_raw)
    assert boot.ratio is not None
    boot.met = boot.ratio.median <= 1.05
    mem = Row("idle RSS, 256 MiB guest", "MiB", baseline_name="raw argv",
              goal="<= 1.1x raw")
    mem.pair(rss_vm, rss_raw)
    assert mem.ratio is not None
    mem.met = mem.ratio.median <= 1.1
    mem.note = f"RSS read {SETTLE_S:.0f} s after the shell answered"
    rows = [boot, mem]
    if ctx.accel == "tcg":
        why = ("/dev/kvm exists but vmanager's probe guest did not run under it (a nested "
               "kvm_pvm hangs guests)" if Path("/dev/kvm").exists() else "no /dev/kvm")
        rows.insert(1, Row("boot to shell (KVM)", "s", note=f"not measured: {why}"))
    return rows

