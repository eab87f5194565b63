"""The multi-server demo: two servers simulated on this machine, a lab across them.

    scripts/setup demo multihost        (or: python -m vmanager.demo_multihost)

Two network namespaces play two servers, each with its own sshd and vmanager
state (:mod:`vmanager.multihost`). A lab file puts one tiny guest on each and
stretches one switch between them with VXLAN. The demo brings the lab up over
SSH, has the guests ping each other across the tunnel, writes a value into one
guest's /tmp, migrates that guest live to the other server, reads the value
back and pings again, then takes everything down and checks that neither server
kept a process, namespace or record. Traffic stays inside the namespaces made.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmanager.errors import VmanagerError
from vmanager.guests import TinyGuest
from vmanager.multihost import Simulation

VMANAGER = [sys.executable, "-m", "vmanager.cli.main"]


def _vm(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run([*VMANAGER, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vmanager {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-1500:]}")
    return proc.stdout


def lab_text(sim: Simulation, name: str, kernel: Path, initrd: Path, append: str) -> str:
    """The demo's lab file for simulation ``sim``."""
    boot = f'kernel = "{kernel}"\ninitrd = "{initrd}"\nappend = "{append}"'
    servers = sim.servers_toml(vmanager=" ".join(VMANAGER))
    return (f'[lab]\nname = "{name}"\ndescription = "two servers, one stretched switch"\n'
            # the guest's kernel and initrd are in the cache, not beside the lab file
            'allow_paths = ["/"]\n\n'
            f"{servers}\n[switches.{name}-lan]\n\n"
            f'[machines.{name}-a]\n{boot}\nmemory = 256\nserver = "s1"\n'
            f'nics = [{{ switch = "{name}-lan" }}]\n\n'
            f'[machines.{name}-b]\n{boot}\nmemory = 256\nserver = "s2"\n'
            f'nics = [{{ switch = "{name}-lan" }}]\n')


def run(out: Path) -> int:
    """Run the demo, writing the lab file into ``out``; 0 when every step worked."""
    from vmanager.guests import tiny_guest
    guest = tiny_guest()
    name = f"mh{secrets.token_hex(2)}"
    a, b = f"{name}-a", f"{name}-b"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    problems: list[str] = []
    # the keys, the servers' state and this host's lab record live only as long as the demo
    with tempfile.TemporaryDirectory(prefix="vmanager-sim-") as tmp:
        os.environ.setdefault("VMANAGER_STATE_DIR", str(Path(tmp) / "orchestrator"))
        problems = _run(out, Path(tmp) / "servers", name, a, b, guest)
    print(f"total {time.monotonic() - t0:.1f} s")
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def _run(out: Path, base: Path, name: str, a: str, b: str, guest: TinyGuest) -> list[str]:
    from vmanager.lab import load, multi
    problems: list[str] = []
    with Simulation(2, base_dir=base) as sim:
        for s in sim.servers:
            print(f"server {s.name}: namespace {s.netns}, sshd on {s.address}:22")
        path = out / "multihost-lab.toml"
        path.write_text(lab_text(sim, name, guest.kernel, guest.initrd, guest.append()))
        lab = load(path)
        print(f"lab file: {path}")
        try:
            t = time.monotonic()
            multi.up(lab, wait_ready=True)
            print(f"up on both servers: {time.monotonic() - t:.1f} s")
            _vm("exec", a, "--", "ip addr add 10.77.0.1/24 dev eth0 && ip link set eth0 up")
            _vm("exec", b, "--", "ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up")
            ping = _vm("exec", a, "--", "ping -c 3 -W 3 10.77.0.2")
            print(f"{a} (s1) -> {b} (s2) over VXLAN: {ping.strip().splitlines()[-1]}")
            value = secrets.token_hex(4)
            _vm("exec", a, "--", f"echo {value} > /tmp/value")
            report = lab.migrate(a, to="s2")
            print(f"migrated {a} s1 -> s2: total {report.total_ms} ms, downtime "
                  f"{report.downtime_ms} ms, {report.transferred >> 20} MiB, "
                  f"{report.wall_s:.1f} s in all")
            kept = _vm("exec", a, "--", "cat /tmp/value").strip()
            print(f"/tmp/value after the move: {kept} "
                  f"({'kept' if kept == value else 'LOST, expected ' + value})")
            if kept != value:
                problems.append("the guest's RAM state did not survive the migration")
            ping = _vm("exec", b, "--", "ping -c 3 -W 3 10.77.0.1")
            print(f"{b} -> {a}, both on s2 now: {ping.strip().splitlines()[-1]}")
            info = json.loads(_vm("--json", "inspect", str(path)))
            for m in info["machines"]:
                print(f"  {m['name']}: {m['state']} on {m['server']}")
        except (VmanagerError, RuntimeError) as exc:
            problems.append(str(exc))
        finally:
            multi.down(lab.name)
            left = sim.leftovers()
            if left:
                problems.append(f"left on the servers: {left}")
            else:
                print("down: nothing left on either server")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m vmanager.demo_multihost``."""
    parser = argparse.ArgumentParser(prog="python -m vmanager.demo_multihost",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), metavar="DIR",
                        help="where to write the lab file (default ./demo-out)")
    args = parser.parse_args(argv)
    try:
        return run(args.out.resolve())
    except KeyboardInterrupt:
        print("demo interrupted (everything it made was taken down)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
