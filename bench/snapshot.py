"""Live snapshot load until the shell answers, vs a cold boot of the same guest."""

from __future__ import annotations

from bench.context import Context
from bench.core import Row, Skip, Stats, timer
from vmanager import Machine

MEMORY_MIB = 256


def _cold_boot(ctx: Context, name: str) -> float:
    m = Machine(name, **ctx.machine_args(name, memory=MEMORY_MIB))
    try:
        with timer() as t:
            m.start_vm()
            m.wait_ready()
        return t()
    finally:
        m.kill()


def snapshot_load(ctx: Context) -> list[Row]:
    if not hasattr(Machine, "load_snapshot"):
        raise Skip("Machine.load_snapshot has not landed yet")
    n_load = ctx.reps(5, 20)
    n_cold = ctx.reps(2, 5)
    loads: list[float] = []
    saves: list[float] = []
    cold: list[float] = []
    name = "bench-snap"
    m = Machine(name, **ctx.machine_args(name, memory=MEMORY_MIB))
    try:
        m.start_vm()
        m.wait_ready()
        with timer() as t:
            m.snapshot("bench", overwrite=True)
        saves.append(t())
        for i in range(n_load):
            m.succeed(f"echo {i} > /tmp/after-snapshot")  # state that the load must undo
            with timer() as t:
                m.load_snapshot("bench")
                m.execute("true", timeout=30)
            loads.append(t())
        if m.execute("test -e /tmp/after-snapshot").status == 0:
            raise RuntimeError("load_snapshot did not restore the guest's state")
    finally:
        m.kill()
        if hasattr(m, "delete_state_disk"):
            m.delete_state_disk()
    # the boot row's cold boots are of the same guest (256 MiB); add more if short
    cold.extend(ctx.cold_boots)
    while len(cold) < n_cold:
        cold.append(_cold_boot(ctx, "bench-cold"))
    row = Row(f"snapshot load to shell ({MEMORY_MIB} MiB)", "s",
              baseline_name="cold boot to shell", goal="<= 0.1x cold boot")
    row.value = Stats.of(loads)
    row.baseline = Stats.of(cold)
    row.ratio = Stats.of([x / row.baseline.median for x in loads])
    speedup = row.baseline.median / row.value.median
    row.met = row.value.median / row.baseline.median <= 0.1
    row.note = (f"{speedup:.1f}x faster than a cold boot; snapshot save took "
                f"{saves[0]:.2f} s; ratio spread is each load / median cold boot")
    row.extra = {"speedup": speedup, "save_s": saves}
    return [row]
