"""Screenshot to PNG: ``Machine.screenshot`` vs the bare QMP ``screendump`` it wraps.

A second baseline shows where the time goes: a PPM ``screendump`` (no
compression in QEMU) encoded to PNG by Pillow at ``compress_level=1``.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from bench.context import Context
from bench.core import Row, Skip, Stats, timer
from vmanager import Machine


def screenshot(ctx: Context) -> list[Row]:
    if not hasattr(Machine, "screenshot"):
        raise Skip("Machine.screenshot has not landed yet")
    args = ctx.machine_args("bench-screen")
    # bochs-drm picks 1280x800 by itself; the size is 1024x768
    args["append"] += " video=1024x768"
    m = Machine("bench-screen", **args)
    try:
        m.start_vm()
        m.wait_ready()
        target = ctx.work / "shot.png"
        first = m.screenshot(target)
        size = (first.width, first.height)
        n = ctx.reps(10, 50)
        vm: list[float] = []
        raw: list[float] = []
        ppm: list[float] = []
        ppm_png: list[float] = []
        pil: Any = None
        with contextlib.suppress(ImportError):
            pil = importlib.import_module("PIL.Image")
        for _ in range(n):
            with timer() as t:
                m.screenshot(target)
            vm.append(t() * 1000)
            with timer() as t:
                m.qmp("screendump", {"filename": str(ctx.work / "raw.png"), "format": "png"})
            raw.append(t() * 1000)
            with timer() as t:
                m.qmp("screendump", {"filename": str(ctx.work / "raw.ppm")})
                ppm.append(t() * 1000)
                if pil is not None:
                    pil.open(ctx.work / "raw.ppm").save(ctx.work / "pil.png", format="PNG",
                                                        compress_level=1)
            ppm_png.append(t() * 1000)
    finally:
        m.kill()
    row = Row(f"screenshot PNG {size[0]}x{size[1]}", "ms", baseline_name="QMP screendump png",
              goal="<= 30 ms")
    row.pair(vm, raw)
    assert row.value is not None
    row.met = row.value.median <= 30
    med = Stats.of(ppm).median
    row.note = (f"QEMU's PPM screendump alone: {med:.1f} ms; PPM + Pillow PNG "
                f"(compress_level=1): {Stats.of(ppm_png).median:.1f} ms"
                + ("" if pil is not None else " (Pillow missing: PPM only)"))
    if size != (1024, 768):
        row.note += f"; the guest's screen was {size[0]}x{size[1]}, not 1024x768"
    row.extra = {"ppm_ms": list(ppm), "ppm_pil_png_ms": list(ppm_png)}
    return [row]
