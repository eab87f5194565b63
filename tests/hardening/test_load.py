"""Load: many machines started and stopped at once from threads, repeatedly."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vmanager import Machine, State
from vmanager.guests import TinyGuest
from vmanager.state import records

MACHINES = 20
ROUNDS = 2


def test_twenty_machines_from_threads_without_leaks_or_wrong_states(tiny: TinyGuest) -> None:
    tag = f"ld{os.getpid() % 1000}"
    for round_ in range(ROUNDS):
        machines = [Machine(f"{tag}r{round_}m{i}", **tiny.machine_args(), memory=128)
                    for i in range(MACHINES)]
        try:
            with ThreadPoolExecutor(max_workers=MACHINES) as pool:
                list(pool.map(lambda m: m.start_vm(timeout=120), machines))
            pids = [m.pid for m in machines]
            assert all(p is not None for p in pids)
            assert len(set(pids)) == MACHINES
            for m in machines:
                assert m.state is State.RUNNING
                assert m.status() == "running"
                assert records.find(m.name) is not None

            def finish(pair: tuple[int, Machine]) -> None:
                index, m = pair
                if index % 2:
                    m.kill()
                else:
                    m.stop()  # QMP quit, then SIGKILL

            with ThreadPoolExecutor(max_workers=MACHINES) as pool:
                list(pool.map(finish, enumerate(machines)))
        finally:
            for m in machines:
                m.kill()
        for m, pid in zip(machines, pids, strict=True):
            assert m.state is State.DEFINED and not m.is_alive()
            assert not Path(f"/proc/{pid}").exists(), f"{m.name}: QEMU {pid} not reaped"
            assert not m.run_dir.exists()
            assert records.find(m.name) is None
