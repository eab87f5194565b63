"""Stopping a running guest: ``Machine.stop()`` vs QMP ``quit`` and ``wait()`` on the raw argv.

The seed's ``stop`` is forceful; it must return in under 2 s whatever the guest
does. The vmanager side is made to ignore ACPI (its ``acpid`` killed) to show that
the guest has no say; its time includes reaping QEMU and removing the run
directory. The baseline is how ``qemu.machine.QEMUMachine.shutdown()`` ends a VM:
``quit`` on QMP, then wait for the process.
"""

from __future__ import annotations

import contextlib

from bench.context import Context
from bench.core import Row, timer
from bench.lifecycle import _argv
from bench.rawqemu import RawQemu
from vmanager import Machine
from vmanager.guests import READY_LINE


def stop(ctx: Context) -> list[Row]:
    """``Machine.stop()`` on a booted guest that ignores ACPI vs raw ``quit`` + ``wait()``."""
    argv = _argv(ctx)
    n = ctx.reps(3, 7)
    vm: list[float] = []
    raw: list[float] = []
    for i in range(n):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            if which == 0:
                m = Machine("bench-stop", **ctx.machine_args("bench-stop"))
                try:
                    m.start_vm()
                    m.wait_ready()
                    m.succeed("killall acpid")
                    with timer() as t:
                        m.stop()
                    vm.append(t())
                finally:
                    m.kill()
            else:
                with RawQemu(argv, ctx.work / "raw-stop") as q:
                    q.launch()
                    q.connect_serial()
                    q.wait_serial(READY_LINE)
                    assert q.proc is not None
                    with timer() as t:
                        with contextlib.suppress(RuntimeError, OSError):  # QMP may close first
                            q.qmp("quit")
                        q.proc.wait(30)
                    raw.append(t())
    row = Row("stop a running guest (ignores ACPI)", "ms", baseline_name="raw QMP quit + wait",
              goal="< 2 s")
    row.pair([x * 1000 for x in vm], [x * 1000 for x in raw])
    assert row.value is not None
    row.met = row.value.max < 2000
    row.note = ("vmanager: QMP quit (QEMU flushes the disks), SIGKILL after 1.5 s, reap, run "
                "directory removed; the guest's acpid was killed first, so an ACPI power-down "
                "would never finish")
    return [row]
