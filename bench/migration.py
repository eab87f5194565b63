"""Live migration between two local QEMUs: ``Machine.migrate`` vs raw QMP on the raw argv."""

from __future__ import annotations

import time
from pathlib import Path

from bench.context import Context
from bench.core import Row, Skip, timer
from bench.rawqemu import RawQemu
from vmanager import Machine
from vmanager.guests import READY_LINE

BANDWIDTH = 10240 << 20   # the same cap vmanager uses: effectively none
DOWNTIME_MS = 300


def _vmanager_once(ctx: Context) -> tuple[float, float, float]:
    """(total ms, downtime ms, wall s until the destination's shell answers)."""
    args = ctx.machine_args("bench-mig")
    src = Machine("bench-mig-a", **args)
    dst = Machine("bench-mig-b", **args)
    try:
        src.start_vm()
        src.wait_ready()
        with timer() as t:
            result = src.migrate(dst, downtime_ms=DOWNTIME_MS)
            dst.execute("true", timeout=30)
        return float(result.total_ms), float(result.downtime_ms or 0), t()
    finally:
        src.kill()
        dst.kill()


def _raw_once(ctx: Context, argv: list[str]) -> tuple[float, float, float]:
    run_a, run_b = ctx.work / "raw-mig-a", ctx.work / "raw-mig-b"
    with RawQemu(argv, run_a) as a, RawQemu([*argv, "-incoming", "defer"], run_b) as b:
        a.launch()
        a.connect_serial()
        a.wait_serial(READY_LINE)
        with timer() as t:
            b.launch()
            uri = f"unix:{Path(run_b) / 'migrate.sock'}"
            b.qmp("migrate-incoming", {"uri": uri})
            a.qmp("migrate-set-parameters", {"max-bandwidth": BANDWIDTH,
                                             "downtime-limit": DOWNTIME_MS})
            a.qmp("migrate", {"uri": uri})
            while True:
                info = a.qmp("query-migrate")
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.01)
            if info["status"] != "completed":
                raise RuntimeError(f"raw migration {info['status']}: {info}")
            while b.qmp("query-status")["status"] == "inmigrate":
                time.sleep(0.01)
        return float(info["total-time"]), float(info.get("downtime", 0)), t()


def migration(ctx: Context) -> list[Row]:
    if not hasattr(Machine, "migrate"):
        raise Skip("Machine.migrate has not landed yet")
    m = Machine("bench-mig-argv", **ctx.machine_args("bench-mig"))
    try:
        m.start_vm()
        argv = list(m.argv)
    finally:
        m.kill()
    n = ctx.reps(1, 5)
    vm: list[tuple[float, float, float]] = []
    raw: list[tuple[float, float, float]] = []
    for _ in range(n):
        vm.append(_vmanager_once(ctx))
        raw.append(_raw_once(ctx, argv))
    total = Row("migration total time (QEMU)", "ms", baseline_name="raw QMP")
    total.pair([v[0] for v in vm], [r[0] for r in raw])
    down = Row("migration downtime (QEMU)", "ms", baseline_name="raw QMP",
               note=f"downtime-limit {DOWNTIME_MS} ms, 256 MiB guest over a unix socket")
    down.pair([v[1] for v in vm], [r[1] for r in raw])
    wall = Row("migrate() until dest shell answers", "s",
               baseline_name="raw: dest start to dest running")
    wall.pair([v[2] for v in vm], [r[2] for r in raw])
    wall.note = ("vmanager's wall time includes starting the destination and a shell round "
                 "trip; the raw one stops when the destination leaves inmigrate")
    return [total, down, wall]
