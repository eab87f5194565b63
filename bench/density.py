"""50 tiny machines started together: memory and CPU per idle machine.

All 50 are started (``start_vm()`` from a few threads), then the run waits until
every shell has answered, lets them idle, checks every shell answers again, and
reads each QEMU's memory (``VmRSS``, and ``Pss``, which divides pages shared
between processes, such as the kernel file every QEMU maps, among them) and CPU
time while idle. The baseline is the same guest booted alone on a plain
``qemu -M pc`` (bench/plainpc.py), idle for one second. Every machine is killed
at the end, also on failure.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.context import Context
from bench.core import Row, Stats, timer
from bench.plainpc import _plain_boot
from vmanager import Machine

COUNT = 50
SETTLE_S = 8.0   # free-page reporting hands pages back ~2 s after they are freed
IDLE_S = 5.0     # CPU time is sampled over this long
GOAL_MIB = 100


def _rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_figures(machines: list[Machine]
                  ) -> tuple[list[dict[str, int]], list[float], float, float]:
    """Start ``machines``, wait for every shell, idle; smaps rollups, idle CPU %, times."""
    try:
        with timer() as t_all, ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda m: m.start_vm(timeout=120), machines))
            started = t_all()
            list(pool.map(lambda m: m.wait_ready(timeout=900), machines))
        all_ready = t_all()
        time.sleep(SETTLE_S)
        for m in machines:
            m.succeed("true", timeout=60)  # every shell answers, once idle too
        pids = [m.pid for m in machines]
        assert all(p is not None for p in pids)
        before = [_cpu_s(p) for p in pids if p is not None]
        time.sleep(IDLE_S)
        cpu = [(_cpu_s(p) - b) / IDLE_S * 100 for p, b in zip(pids, before, strict=True)
               if p is not None]
        rollups = [_rollup(p) for p in pids if p is not None]
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda m: m.kill(), machines))
    return rollups, cpu, started, all_ready


def _row(ctx: Context, name: str, memory: int, rollups: list[dict[str, int]],
         cpu: list[float]) -> Row:
    rss = [r["Rss"] / 1024 for r in rollups]
    if not ctx.plain_rss:
        ctx.plain_rss.append(_plain_boot(ctx, memory)[1])
    row = Row(name, "MiB", baseline_name="one plain -M pc guest, idle",
              goal=f"<= {GOAL_MIB} MiB each")
    row.value = Stats.of(rss)
    row.baseline = Stats.of(ctx.plain_rss)
    row.ratio = Stats.of([x / row.baseline.median for x in rss])
    row.met = max(rss) <= GOAL_MIB
    row.extra = {"pss_mib": [r["Pss"] / 1024 for r in rollups],
                 "anon_mib": [r["Anonymous"] / 1024 for r in rollups],
                 "idle_cpu_percent": cpu, "memory_mib": memory}
    return row


def _figures(row: Row, cpu: list[float]) -> str:
    pss, anon = row.extra["pss_mib"], row.extra["anon_mib"]
    return (f"per machine Pss {statistics.median(pss):.0f} MiB (shared pages divided), "
            f"anonymous {statistics.median(anon):.0f} MiB; idle CPU "
            f"{statistics.median(cpu):.1f}% each, {sum(cpu):.0f}% for all; memory "
            f"{row.extra['memory_mib']} MiB each")


def fifty_machines(ctx: Context) -> list[Row]:
    machines = [Machine(f"bench-d{i}", **ctx.machine_args(f"bench-d{i}"))
                for i in range(COUNT)]

    rollups, cpu, started, all_ready = _idle_figures(machines)
    row = _row(ctx, f"{COUNT} machines, RSS per idle machine", machines[0].memory, rollups, cpu)
    row.note = (f"all {COUNT} shells answered {all_ready:.0f} s after the first start "
                f"(all started after {started:.1f} s); " + _figures(row, cpu))
    row.extra["all_ready_s"] = all_ready
    return [row]


def fifty_clones(ctx: Context) -> list[Row]:
    """50 clones of one template (booted once, saved), started together."""
    with tempfile.TemporaryDirectory(prefix="bench-template-") as tmp:
        directory = Path(tmp) / "t"
        source = Machine("bench-tsrc", template_source=True,
                         **ctx.machine_args("bench-tsrc"))
        try:
            with timer() as t_source:
                source.start_vm(timeout=120)
                source.wait_ready(timeout=300)
                source.save_template(directory)
            made = t_source()
        finally:
            source.kill()
        machines = [Machine(f"bench-c{i}", template=directory,
                            **ctx.machine_args(f"bench-c{i}")) for i in range(COUNT)]

        rollups, cpu, started, all_ready = _idle_figures(machines)
    row = _row(ctx, f"{COUNT} machines from a template, RSS per idle machine",
               machines[0].memory, rollups, cpu)
    row.note = (f"the template: one boot and save, {made:.1f} s; all {COUNT} clones started "
                f"and their shells answered {all_ready:.1f} s after the first start; "
                + _figures(row, cpu))
    row.extra.update({"all_ready_s": all_ready, "template_s": made, "started_s": started})
    return [row]
