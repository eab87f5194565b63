"""Labs across servers, on two servers simulated by :mod:`vmanager.multihost`.

* ``up`` of a lab whose two machines sit on two servers (one stretched switch,
  VXLAN) beside the same lab with both machines on one server; both go over SSH,
  so the difference is what splitting costs (a second server's SSH round trips,
  the VXLAN ports).
* A live migration between the servers (``lab.migrate``: state through the two
  SSH connections) beside a local ``Machine.migrate`` of the same guest (unix
  socket), both with a 100 ms downtime limit: QEMU's total time and downtime,
  and the wall time of the call.
* A migration of a machine with a 64 MiB disk (32 MiB of it random data the
  guest wrote) between servers that share no storage (the disk mirrored over
  NBD through SSH) beside the same migration with the disk on shared storage
  (``shared_storage=True``, nothing copied).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.context import Context
from bench.core import Row, Skip, timer
from vmanager import Machine
from vmanager.multihost import Simulation

DOWNTIME_MS = 100
SSHD = Path("/usr/sbin/sshd")


DISK_MIB = 64
WRITTEN_MIB = 32


def _lab_text(ctx: Context, sim: Simulation, name: str, servers: tuple[str, str],
              disk: Path | None = None) -> str:
    g = ctx.guest
    vm_cmd = f"{sys.executable} -m vmanager.cli.main"
    boot = f'kernel = "{g.kernel}"\ninitrd = "{g.initrd}"\nappend = "{g.append()}"'
    # allow_paths: the guest's kernel and the disks live outside the lab file's directory
    body = [f'[lab]\nname = "{name}"\nallow_paths = ["/"]\n',
            sim.servers_toml(vmanager=vm_cmd),
            f"[switches.sw{name[-4:]}]\n"]
    for i, server in enumerate(servers):
        disks = (f'disks = [{{ path = "{disk}", size = "{DISK_MIB}M" }}]\n'
                 if disk is not None and i == 0 else "")
        body.append(f"[machines.{name}{'ab'[i]}]\n{boot}\nmemory = 256\nserver = "
                    f'"{server}"\n{disks}nics = [{{ switch = "sw{name[-4:]}" }}]\n')
    return "\n".join(body)


def multihost(ctx: Context) -> list[Row]:
    if not SSHD.exists():
        raise Skip("needs Debian's openssh-server (scripts/setup installs it)")
    if os.geteuid() != 0:
        raise Skip("needs root (namespaces)")
    from vmanager.lab import load, multi
    n = ctx.reps(1, 3)
    up_split: list[float] = []
    up_one: list[float] = []
    cross: list[tuple[float, float, float]] = []
    mirrored: list[tuple[float, float, float]] = []
    shared_runs: list[tuple[float, float, float]] = []
    local: list[tuple[float, float, float]] = []
    state = tempfile.mkdtemp(prefix="bench-mh-state-", dir=ctx.work)
    old = os.environ.get("VMANAGER_STATE_DIR")
    os.environ["VMANAGER_STATE_DIR"] = state  # the orchestrator's lab records
    try:
        with Simulation(2, base_dir=ctx.work / "multihost") as sim:
            for i in range(n):
                for servers, into in ((("s1", "s2"), up_split), (("s1", "s1"), up_one)):
                    name = f"bmh{i}{servers[1]}{os.getpid() % 100:02d}"
                    path = ctx.work / f"{name}.toml"
                    path.write_text(_lab_text(ctx, sim, name, servers))
                    lab = load(path)
                    try:
                        with timer() as t:
                            multi.up(lab, wait_ready=True)
                        into.append(t())
                        if servers == ("s1", "s2"):
                            with timer() as t:
                                report = lab.migrate(f"{name}a", to="s2",
                                                     downtime_ms=DOWNTIME_MS)
                            cross.append((float(report.total_ms),
                                          float(report.downtime_ms or 0), t()))
                    finally:
                        multi.down(lab.name)
                local.append(_local_once(ctx))
                for shared, into_d in ((False, mirrored), (True, shared_runs)):
                    into_d.append(_disk_once(ctx, sim, i, shared))
    finally:
        if old is None:
            os.environ.pop("VMANAGER_STATE_DIR", None)
        else:
            os.environ["VMANAGER_STATE_DIR"] = old
    up = Row("lab up, 2 machines on 2 servers", "s", baseline_name="same lab on 1 server",
             note="both over SSH to simulated servers; --wait-ready; one stretched switch")
    up.pair(up_split, up_one)
    total = Row("migration total across servers (QEMU)", "ms", baseline_name="local migrate")
    total.pair([c[0] for c in cross], [c[0] for c in local])
    down = Row("migration downtime across servers", "ms", baseline_name="local migrate",
               note=f"256 MiB tiny guest, downtime-limit {DOWNTIME_MS} ms; goal <= 100 ms")
    down.pair([c[1] for c in cross], [c[1] for c in local])
    wall = Row("lab.migrate wall time", "s", baseline_name="local migrate() wall",
               note="across: preparing the destination over SSH included")
    wall.pair([c[2] for c in cross], [c[2] for c in local])
    disk_wall = Row(f"migrate with a {DISK_MIB} MiB disk, no shared storage: wall", "s",
                    baseline_name="same, shared storage",
                    note=f"{WRITTEN_MIB} MiB of the disk written by the guest; mirror over NBD "
                    "through SSH, then RAM")
    disk_wall.pair([c[2] for c in mirrored], [c[2] for c in shared_runs])
    disk_down = Row("migrate with a disk: downtime (QEMU)", "ms",
                    baseline_name="same, shared storage",
                    note="includes finishing the mirrors while the guest is paused")
    disk_down.pair([c[1] for c in mirrored], [c[1] for c in shared_runs])
    return [up, total, down, wall, disk_wall, disk_down]


def _disk_once(ctx: Context, sim: Simulation, i: int, shared: bool) -> tuple[float, float, float]:
    """(total ms, downtime ms, wall s) of one migration of a machine with a disk."""
    from vmanager.lab import load, multi
    name = f"bmd{i}{'s' if shared else 'm'}{os.getpid() % 100:02d}"
    where = ctx.work if shared else sim.storage  # sim.storage: each server's own
    path = ctx.work / f"{name}.toml"
    path.write_text(_lab_text(ctx, sim, name, ("s1", "s2"), disk=where / f"{name}.qcow2"))
    lab = load(path)
    try:
        multi.up(lab, wait_ready=True)
        subprocess.run([sys.executable, "-m", "vmanager.cli.main", "exec", f"{name}a", "--",
                        f"dd if=/dev/urandom of=/dev/vda bs=1M count={WRITTEN_MIB} "
                        "conv=fsync"], check=True, capture_output=True, timeout=300)
        with timer() as t:
            report = lab.migrate(f"{name}a", to="s2", downtime_ms=DOWNTIME_MS,
                                 shared_storage=shared)
        return float(report.total_ms), float(report.downtime_ms or 0), t()
    finally:
        multi.down(lab.name)
        for s in sim.servers:
            (s.storage / f"{name}.qcow2").unlink(missing_ok=True)
        (ctx.work / f"{name}.qcow2").unlink(missing_ok=True)


def _local_once(ctx: Context) -> tuple[float, float, float]:
    args = ctx.machine_args("bench-mh")
    src = Machine("bench-mh-a", **args)
    dst = Machine("bench-mh-b", **args)
    try:
        src.start_vm()
        src.wait_ready()
        with timer() as t:
            result = src.migrate(dst, downtime_ms=DOWNTIME_MS)
        return float(result.total_ms), float(result.downtime_ms or 0), t()
    finally:
        src.kill()
        dst.kill()

