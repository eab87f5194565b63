"""Console throughput: a guest flooding its serial port, read by vmanager vs raw QEMU.

The guest's serial shell prints ``size`` bytes (one long line, the worst case
for a line-oriented reader) and an end marker. vmanager's side is
``Machine.console`` (drained on the I/O loop into the bounded history) with
``wait_for`` of the marker; the baseline is the same argv run directly, its
serial socket read with plain ``recv`` until the marker. The emulated 8250
UART under TCG is the bottleneck of both, so the goal is parity (>= 0.9x).
"""

from __future__ import annotations

from bench.context import Context
from bench.core import Row, timer
from bench.rawqemu import RawQemu
from vmanager import Machine
from vmanager.guests import READY_LINE

MARK = "END-OF-FLOOD"


def _command(size: int) -> bytes:
    # the typed line never contains the marker itself (echo is off anyway)
    return (f"head -c {size} /dev/zero | tr '\\0' x; echo; echo END-OF-\"\"FLOOD\n").encode()


def _raw_flood(q: RawQemu, size: int, timeout: float) -> float:
    assert q.serial is not None
    with timer() as t:
        q.serial.sendall(_command(size))
        q.wait_serial(MARK, timeout=timeout)
    return t()


def console_throughput(ctx: Context) -> list[Row]:
    size = (16 if ctx.full else 1) << 20
    n = ctx.reps(3, 5)
    timeout = size / 50_000 + 60  # far slower than 0.5 MB/s would be a failure
    vm: list[float] = []
    raw: list[float] = []
    m = Machine("bench-console", **ctx.machine_args("bench-console"))
    try:
        m.start_vm()
        m.wait_ready()
        argv = list(m.argv)
        for _ in range(n):
            m.console.mark()
            with timer() as t:
                m.console.write(_command(size))
                m.console.wait_for(MARK, timeout=timeout)
            vm.append(size / t() / 1e6)
        held = len(m.console.read_bytes())
    finally:
        m.kill()
    with RawQemu(argv, ctx.work / "raw-console") as q:
        q.launch()
        q.connect_serial()
        q.wait_serial(READY_LINE)
        raw = [size / _raw_flood(q, size, timeout) / 1e6 for _ in range(n)]
    row = Row(f"console throughput, {size >> 20} MiB flood", "MB/s",
              baseline_name="raw QEMU socket recv", goal=">= 0.9x raw QEMU")
    row.pair(vm, raw)
    assert row.ratio is not None
    row.met = row.ratio.median >= 0.9
    row.note = (f"serial 8250 UART under {ctx.accel}; one line of {size} bytes per sample; "
                f"vmanager kept {held} bytes of history (bounded), not the flood")
    return [row]
