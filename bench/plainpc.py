"""vmanager's default tiny-guest boot against a plain ``qemu-system-x86_64 -M pc``.

The baseline is what someone would type without tuning anything: the same
kernel, initrd and memory on ``-M pc`` with QEMU's default devices (VGA, IDE,
floppy, ...), QEMU's default CPU model and the command line ``console=ttyS0``;
only the default NIC is left out (``-nic none``), so the guest cannot send
anything anywhere. Both are timed from the start of QEMU to the guest's ready
line (vmanager: until its shell answers). The plain guest's idle RSS is kept
for the density row.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.context import Context
from bench.core import Row, timer
from bench.rawqemu import RawQemu, rss_kib
from vmanager import Machine
from vmanager.guests import READY_LINE

SETTLE_S = 1.0


def plain_argv(ctx: Context, run_dir: Path, memory: int) -> list[str]:
    """The untuned command line (sockets for QMP and the serial port only)."""
    return [ctx.qemu, "-M", "pc", "-accel", ctx.accel, "-m", str(memory),
            "-kernel", str(ctx.guest.kernel), "-initrd", str(ctx.guest.initrd),
            "-append", "console=ttyS0", "-display", "none", "-nic", "none",
            "-chardev", f"socket,id=qmp,path={run_dir / 'qmp.sock'}",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"socket,id=serial0,path={run_dir / 'serial0.sock'},server=on,wait=off",
            "-serial", "chardev:serial0"]


def _plain_boot(ctx: Context, memory: int) -> tuple[float, float]:
    run_dir = ctx.work / "plain-pc"
    with RawQemu(plain_argv(ctx, run_dir, memory), run_dir) as q:
        with timer() as t:
            q.launch()
            q.connect_serial()
            q.wait_serial(READY_LINE, timeout=300)
        time.sleep(SETTLE_S)
        return t(), rss_kib(q.pid) / 1024


def _vmanager_boot(ctx: Context, machine_type: str = "pc") -> tuple[float, Machine]:
    m = Machine("bench-tuned", **ctx.guest.machine_args("bench-tuned",
                                                        machine_type=machine_type))
    try:
        with timer() as t:
            m.start_vm()
            m.wait_ready(timeout=300)
    except BaseException:
        m.kill()
        raise
    return t(), m


def boot_vs_plain(ctx: Context) -> list[Row]:
    n = ctx.reps(3, 5)
    tuned: list[float] = []
    micro: list[float] = []
    plain: list[float] = []
    memory = 0
    for i in range(n):
        # the three alternate, each order rotating: tuned pc, microvm, plain pc
        for which in ((0, 1, 2), (2, 0, 1), (1, 2, 0))[i % 3]:
            if which in (0, 1):
                dt, m = _vmanager_boot(ctx, "pc" if which == 0 else "microvm")
                memory = m.memory
                m.kill()
                (tuned if which == 0 else micro).append(dt)
            else:
                dt, rss = _plain_boot(ctx, memory or 256)
                plain.append(dt)
                ctx.plain_rss.append(rss)
    note = ("until the ready line (vmanager: its shell answered); the baseline has "
            "QEMU's default devices and CPU, console=ttyS0 as the command line, no NIC")
    row = Row("boot vs plain pc (default tiny guest)", "s",
              baseline_name="qemu -M pc, default devices", goal="<= 0.6x plain pc")
    row.pair(tuned, plain)
    assert row.ratio is not None
    row.met = row.ratio.median <= 0.6
    row.note = note
    mrow = Row("boot vs plain pc (tiny guest on microvm)", "s",
               baseline_name="qemu -M pc, default devices", goal="<= 0.6x plain pc")
    mrow.pair(micro, plain)
    assert mrow.ratio is not None
    mrow.met = mrow.ratio.median <= 0.6
    mrow.note = (note + "; machine_args(machine_type='microvm'): virtio-mmio devices, "
                 "no VGA, no hot-plug")
    return [row, mrow]
