"""Rollback of a 3-machine lab to a checkpoint, vs a cold ``up`` of the same lab.

Both are measured until every machine's shell answers: a rollback returns
every machine's RAM, devices and disks to the checkpoint (the network stays),
a cold up makes the switch, the namespaces and NICs and boots the three guests.
"""

from __future__ import annotations

import secrets

from bench.context import Context
from bench.core import Row, Stats, timer
from vmanager import lab as labs
from vmanager.state.persist import attach, detach

MACHINES = 3
MEMORY_MIB = 192

LAB = """
[lab]
name = "{name}"

[switches.{sw}]
{machines}
"""


def _lab(ctx: Context) -> labs.Lab:
    tag = secrets.token_hex(2)
    machines = "".join(f'\n[machines.bl{tag}{i}]\nguest = "tiny"\nmemory = {MEMORY_MIB}\n'
                       f'nics = [{{ switch = "bs{tag}" }}]\n' for i in range(MACHINES))
    path = ctx.work / f"bench-lab-{tag}.toml"
    path.write_text(LAB.format(name=f"bl{tag}", sw=f"bs{tag}", machines=machines))
    return labs.load(path)


def _all_answer(lab: labs.Lab, *, boot: bool = False) -> float:
    """Seconds until every machine's shell answered (``boot``: the first time).

    Letting go of each machine afterwards is not counted, on either side:
    detaching from a machine whose shell was used takes ~1.5 s here.
    """
    spent = 0.0
    for spec in lab.machines:
        with timer() as t:
            m = attach(spec.name)
            try:
                if boot:
                    m.wait_ready(120)
                else:
                    m.execute("true", timeout=60)
            except BaseException:
                detach(m)
                raise
        spent += t()
        detach(m)
    return spent


def lab_rollback(ctx: Context) -> list[Row]:
    n_roll = ctx.reps(3, 10)
    n_cold = ctx.reps(1, 3)
    colds: list[float] = []
    rolls: list[float] = []
    saves: list[float] = []
    for _ in range(n_cold):
        lab = _lab(ctx)
        try:
            with timer() as t:
                labs.up(lab)
            colds.append(t() + _all_answer(lab, boot=True))
        finally:
            labs.down(lab.name)
    lab = _lab(ctx)
    try:
        labs.up(lab, wait_ready=True)
        made = lab.checkpoint("bench")
        saves.append(made.seconds)
        for i in range(n_roll):
            for spec in lab.machines:  # state that the rollback must undo
                m = attach(spec.name)
                try:
                    m.succeed(f"echo {i} > /root/after-checkpoint")
                finally:
                    detach(m)
            with timer() as t:
                lab.rollback("bench")
            rolls.append(t() + _all_answer(lab))
        for spec in lab.machines:
            m = attach(spec.name)
            try:
                if m.execute("test -e /root/after-checkpoint").status == 0:
                    raise RuntimeError(f"rollback did not restore {spec.name}")
            finally:
                detach(m)
    finally:
        labs.down(lab.name)
    row = Row(f"lab rollback to shells ({MACHINES} x {MEMORY_MIB} MiB)", "s",
              baseline_name="cold up to shells", goal=">= 3x faster than a cold up")
    row.value = Stats.of(rolls)
    row.baseline = Stats.of(colds)
    row.ratio = Stats.of([x / row.baseline.median for x in rolls])
    speedup = row.baseline.median / row.value.median
    row.met = speedup >= 3
    row.note = (f"{speedup:.1f}x faster than a cold up; the checkpoint took "
                f"{saves[0]:.2f} s (all {MACHINES} paused together); both sides are timed "
                "until every shell answers, without letting go of the shells afterwards")
    row.extra = {"speedup": speedup, "checkpoint_s": saves}
    return [row]
