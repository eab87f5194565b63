"""Taking the demo's lab down whatever happens, and checking nothing is left."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from vmanager import lab as labs
from vmanager.demo.output import Say, _say, _step
from vmanager.errors import ShutdownTimeout, VmanagerError
from vmanager.lab import record as labrec
from vmanager.machine import Machine
from vmanager.net import list_namespaces
from vmanager.state import records
from vmanager.state.process import Liveness, ProcessIdentity


class _Signals:
    """SIGINT/SIGTERM handling for :func:`main`: the first one interrupts, later ones wait.

    The first signal raises KeyboardInterrupt so that the ``finally`` blocks take
    the lab down; any further signal (a second Ctrl-C, ``timeout`` signalling the
    whole process group) and any signal during the teardown only print a note,
    so the teardown is never cut short. Only in this process: pyroute2 opens
    namespace sockets in short forked children (stopping them with SIGTERM),
    which inherit the handler and must simply die.
    """

    def __init__(self) -> None:
        self.installed = False
        self.interrupted = False
        self.shielded = False
        self.say: Say = _say

    @contextlib.contextmanager
    def installed_in_main(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        owner = os.getpid()

        def handler(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != owner:
                os._exit(128 + signum)
            if self.interrupted or self.shielded:
                self.say("  (still taking the lab down; one moment)")
                return
            self.interrupted = True
            raise KeyboardInterrupt

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        self.installed, self.interrupted = True, False
        try:
            yield
        finally:
            for s, previous in old.items():
                signal.signal(s, previous)
            self.installed = False

    @contextlib.contextmanager
    def shield(self, say: Say) -> Iterator[None]:
        self.shielded, self.say = True, say
        try:
            yield
        finally:
            self.shielded = False


_signals = _Signals()


def _teardown(lab: labs.Lab, machines: dict[str, Machine],
              processes: Sequence[ProcessIdentity], *, graceful: bool, say: Say) -> list[str]:
    """Stop the machines (all at once), remove the lab, check nothing is left."""
    problems = []

    def release(m: Machine) -> None:
        if graceful:
            try:
                m.shutdown(timeout=10.0)  # ACPI power-off
            except ShutdownTimeout:
                m.stop()  # QMP quit, then SIGKILL
        else:
            m.kill()

    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(len(machines), 1)) as pool:
        futures = {name: pool.submit(release, m) for name, m in machines.items()}
    if machines:
        how = "powered off" if graceful else "killed"
        say(f"  {f'{how} {len(machines)} machines at once':<30} {time.monotonic() - t:5.2f} s")
    for name, f in futures.items():
        exc = f.exception()
        if exc is not None:
            problems.append(f"stopping {name}: {exc}")
            with contextlib.suppress(VmanagerError):
                machines[name].kill()
    try:
        removed = labs.down(lab.name, step=_step(say), timeout=60.0)
        say(f"  removed {len(removed)} objects")
    except VmanagerError as exc:
        problems.append(str(exc))
    left = leftovers(lab, processes)
    problems += [f"left behind: {what}" for what in left]
    say("  nothing left behind" if not left else f"  LEFT BEHIND: {', '.join(left)}")
    return problems


def leftovers(lab: labs.Lab, processes: Sequence[ProcessIdentity] = ()) -> list[str]:
    """What of ``lab`` still exists: record, namespaces, links, records, processes."""
    left = []
    if labrec.load(lab.name) is not None:
        left.append(f"lab record {labrec.path_of(lab.name)}")
    namespaces = set(list_namespaces())
    wanted = ([h.name for h in lab.hosts] + [r.name for r in lab.routers if r.mode == "nat"]
              + [m.name for m in lab.machines if m.nics])
    left += [f"namespace {n}" for n in wanted if n in namespaces]
    # a router's LAN port is its name + "l" (Router.lan_port)
    links = ([h.port for h in lab.hosts] + [s.name for s in lab.switches]
             + [r.name + "l" for r in lab.routers]
             + [r.name for r in lab.routers if r.mode == "bridged"])
    left += [f"link {n}" for n in links if Path("/sys/class/net", n).exists()]
    left += [f"machine record {m.name}" for m in lab.machines if records.find(m.name)]
    left += [f"process {p.pid} ({p.argv[0] if p.argv else '?'})" for p in processes
             if p.check() is Liveness.RUNNING]
    return left
