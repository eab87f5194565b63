"""Screenshot to PNG: ``Machine.screenshot`` vs the bare QMP ``screendump`` it wraps."""

from __future__ import annotations

from bench.context import Context
from bench.core import Row, Skip, timer
from vmanager import Machine


def screenshot(ctx: Context) -> list[Row]:
    if not hasattr(Machine, "screenshot"):
        raise Skip("Machine.screenshot has not landed yet")
    m = Machine("bench-screen", **ctx.machine_args("bench-screen"))
    try:
        m.start_vm()
        m.wait_ready()
        # the guest's VGA console (bochs-drm) comes up in 1024x768
        target = ctx.work / "shot.png"
        first = m.screenshot(target)
        size = (first.width, first.height)
        n = ctx.reps(10, 50)
        vm: list[float] = []
        raw: list[float] = []
        for _ in range(n):
            with timer() as t:
                m.screenshot(target)
            vm.append(t() * 1000)
            with timer() as t:
                m.qmp("screendump", {"filename": str(ctx.work / "raw.png"), "format": "png"})
            raw.append(t() * 1000)
    finally:
        m.kill()
    row = Row(f"screenshot PNG {size[0]}x{size[1]}", "ms", baseline_name="QMP screendump png",
              goal="<= 30 ms")
    row.pair(vm, raw)
    assert row.value is not None
    row.met = row.value.median <= 30
    if size != (1024, 768):
        row.note = f"the guest's screen was {size[0]}x{size[1]}, not 1024x768"
    return [row]
