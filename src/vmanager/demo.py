"""The demo: a lab of three machines, a switch and a NAT router, driven from Python.

Run with ``python -m vmanager.demo`` (``scripts/setup demo`` installs first). It

1. brings up the example lab ``vmanager/examples/demo-lab.toml`` (the same file as
   ``examples/demo-lab.toml`` in the repository): an "outside" namespace, a switch, a
   NAT router serving DHCP on that switch, and three tiny guests plugged into it;
2. lets every guest take a DHCP lease and shows the addresses;
3. pings from every machine to every other machine and to the outside;
4. saves a screenshot of one machine's screen (PNG) and the topology (SVG and Mermaid);
5. prints a summary table, then takes everything down again -- also after a failure
   or Ctrl-C -- and checks that nothing is left (namespaces, links, QEMU, dnsmasq,
   records).

All traffic stays inside namespaces the lab makes. The files go to ``--out DIR``
(default ``./vmanager-demo-out``). Exit status: 0 when every step worked, 1 when a
step failed (the summary says which), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from vmanager import lab as labs
from vmanager.errors import ConfigError, GuestError, ShutdownTimeout, StateError, VmanagerError
from vmanager.guests import tiny_guest
from vmanager.lab import record as labrec
from vmanager.machine import Machine
from vmanager.net import list_namespaces
from vmanager.net.router import default_subnet
from vmanager.state import records
from vmanager.state.process import Liveness, ProcessIdentity

#: The demo lab, shipped inside the package (a copy of ``examples/demo-lab.toml``).
PACKAGED_LAB = "examples/demo-lab.toml"
DEFAULT_OUT = Path("vmanager-demo-out")
#: dnsmasq pings an address before offering it and answers no DISCOVER meanwhile,
#: so three clients at once take ~9 s; -T 3 keeps a client from giving up on a
#: late offer or ACK (-T 1 does), -t 10 leaves room on a slow host.
DHCP = "udhcpc -i eth0 -n -q -t 10 -T 3"
DHCP_TIMEOUT = 60.0
BOOT_TIMEOUT = 120.0
STEP_TIMEOUT = 30.0

T = TypeVar("T")
Say = Callable[[str], None]


def _say(message: str) -> None:
    print(message, flush=True)


# -- results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PingResult:
    """One ping from a machine: the target's name and address, and how it went."""

    target: str
    address: str | None
    ok: bool
    rtt_ms: float | None = None


@dataclass(frozen=True)
class MachineResult:
    """What the demo saw of one machine."""

    name: str
    mac: str
    address: str | None  #: the guest's eth0 address after DHCP
    lease: str | None  #: the router's DHCP lease for the machine's MAC
    boot_s: float | None  #: QEMU start to the guest's shell answering
    pings: tuple[PingResult, ...] = ()


@dataclass(frozen=True)
class DemoResult:
    """The whole run: machines, files written, timings and every problem seen."""

    lab: str
    accel: str | None
    subnet: str
    outside: str
    machines: tuple[MachineResult, ...]
    files: tuple[Path, ...]
    timings: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every step worked and nothing was left behind."""
        return not self.problems


# -- the lab ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The parts of a lab the demo works with."""

    lab: labs.Lab
    router: labs.RouterSpec
    outside: labs.HostSpec
    machines: tuple[str, ...]
    subnet: ipaddress.IPv4Network

    @property
    def outside_ip(self) -> str:
        """The outside namespace's address (the ping target "outside")."""
        assert self.outside.address is not None
        return str(ipaddress.IPv4Interface(self.outside.address).ip)


def packaged_lab() -> labs.Lab:
    """The demo lab shipped in the package (``vmanager/examples/demo-lab.toml``).

    Raises:
        LabFileError: the packaged file is missing or invalid (a broken install).
    """
    resource = resources.files("vmanager").joinpath(PACKAGED_LAB)
    if isinstance(resource, Path):
        return labs.load(resource)
    # Not a plain file (a zipped install): the path then only names the lab.
    return labs.parse(resource.read_text(), path=f"<vmanager>/{PACKAGED_LAB}")


def plan(lab: labs.Lab) -> Plan:
    """Check that ``lab`` has what the demo drives and pick the parts out.

    It needs a NAT router serving DHCP, plugged into a switch, whose trunk is a
    ``[hosts]`` entry with an address (the outside), and at least two tiny-guest
    machines whose first NIC is on that switch.

    Raises:
        ConfigError: naming what is missing.
    """
    hosts = {h.name: h for h in lab.hosts}
    for router in lab.routers:
        outside = hosts.get(router.trunk)
        if (router.mode == "nat" and router.dhcp is not False and router.switch
                and outside is not None and outside.address):
            break
    else:
        raise ConfigError(f"{lab.path}: the demo needs a NAT router with DHCP, plugged into "
                          "a switch, whose trunk is a [hosts] entry with an address")
    machines = tuple(m.name for m in lab.machines
                     if m.nics and m.nics[0].switch == router.switch)
    if len(machines) < 2:
        raise ConfigError(f"{lab.path}: the demo needs at least two machines whose first NIC "
                          f"is on switch {router.switch!r}")
    for name in machines:
        if lab.machine(name).guest != "tiny":
            raise ConfigError(f"{lab.path}: machine {name!r} must be guest = \"tiny\" (the "
                              "demo runs commands through the tiny guest's shell)")
    subnet = (ipaddress.IPv4Network(router.subnet) if router.subnet
              else default_subnet(router.name))
    return Plan(lab, router, outside, machines, subnet)


def with_accel(lab: labs.Lab, accel: str) -> labs.Lab:
    """``lab`` with every machine's accelerator set to ``accel``."""
    return dataclasses.replace(lab, machines=tuple(
        dataclasses.replace(m, accel=accel) for m in lab.machines))


# -- running ----------------------------------------------------------------------------

def run(lab: labs.Lab, *, out: Path, say: Say = _say, own_leftover: bool = True,
        timeout: float = BOOT_TIMEOUT) -> DemoResult:
    """Bring ``lab`` up, drive it, write the files into ``out``, take it down.

    The lab is taken down in every case (``finally``), Ctrl-C included; a second
    Ctrl-C during the teardown does not cut it short. ``own_leftover`` allows
    taking down a lab of the same name that a killed earlier run left up from
    the same file; a lab up from another file is never touched.

    Raises:
        ConfigError: ``lab`` lacks what the demo needs (see :func:`plan`).
        StateError: the lab is already up (and is not ours to take down).
        VmanagerError: a step that cannot go on failed; the lab is down again.
    """
    p = plan(lab)
    say = _never_raising(say)
    started = time.monotonic()
    timings: dict[str, float] = {}
    problems: list[str] = []
    files: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)

    svg_path, mmd_path = out / "topology.svg", out / "topology.mmd"
    svg_path.write_text(labs.svg(lab))
    mmd_path.write_text(labs.mermaid(lab))
    files += [svg_path, mmd_path]

    t = time.monotonic()
    guest = tiny_guest(progress=lambda msg: say(f"  tiny guest: {msg}"))
    timings["tiny guest"] = time.monotonic() - t
    say(f"tiny guest: kernel {guest.kernel_version}")

    _clear_leftover(lab, own=own_leftover, say=say)
    machines: dict[str, Machine] = {}
    processes: list[ProcessIdentity] = []
    pool = ThreadPoolExecutor(max_workers=max(len(p.machines), 1),
                              thread_name_prefix="demo")
    results: tuple[MachineResult, ...] = ()
    accel: str | None = None
    finished = False
    try:
        say(f"bringing up lab {lab.name!r}:")
        t = time.monotonic()
        labs.up(lab, step=_step(say), timeout=timeout)
        timings["lab up"] = time.monotonic() - t
        processes = _processes(lab)
        for name in p.machines:
            machines[name] = Machine.attach(name, timeout=STEP_TIMEOUT)
        accel = machines[p.machines[0]].accel

        say(f"waiting for the guests to boot ({accel}, in parallel)...")
        t = time.monotonic()
        boot = _parallel(pool, {n: m.wait_ready for n, m in machines.items()}, timeout)
        timings["boot"] = time.monotonic() - t
        for name in p.machines:
            say(f"  {name:<16} shell ready {boot[name]:5.1f} s after QEMU started")

        say(f"DHCP from router {p.router.name!r} ({p.subnet}):")
        t = time.monotonic()
        addresses = _parallel(pool, {n: _dhcp_task(m) for n, m in machines.items()},
                              DHCP_TIMEOUT)
        timings["dhcp"] = time.monotonic() - t
        info = labs.inspect(lab)
        leases = {m["name"]: (m["nics"][0]["mac"], m["nics"][0]["address"])
                  for m in info["machines"] if m["nics"]}
        for name in p.machines:
            address, (mac, lease) = addresses[name], leases[name]
            say(f"  {name:<16} {address or 'no address':<16} {mac}")
            problems += _address_problems(name, address, lease, p.subnet)

        targets = {n: addresses[n] for n in p.machines}
        targets["outside"] = p.outside_ip
        say(f"pinging between the machines and to the outside ({p.outside_ip}):")
        t = time.monotonic()
        pings = _parallel(pool, {n: _ping_task(m, n, targets) for n, m in machines.items()},
                          STEP_TIMEOUT)
        timings["pings"] = time.monotonic() - t
        for name in p.machines:
            for r in pings[name]:
                if not r.ok:
                    problems.append(f"{name} could not ping {r.target} ({r.address})")
        say(f"  {sum(r.ok for n in p.machines for r in pings[n])} of "
            f"{sum(len(pings[n]) for n in p.machines)} pings answered")

        shot_path = out / f"{p.machines[0]}-screen.png"
        try:
            _screenshot(machines[p.machines[0]], shot_path, p.outside_ip)
            files.insert(0, shot_path)
            say(f"screenshot of {p.machines[0]}'s screen: {shot_path.name}")
        except VmanagerError as exc:
            problems.append(f"screenshot of {p.machines[0]}: {exc}")

        results = tuple(MachineResult(n, leases[n][0], addresses[n], leases[n][1], boot[n],
                                      tuple(pings[n])) for n in p.machines)
        finished = True
    finally:
        with _signals.shield(say):
            pool.shutdown(wait=False, cancel_futures=True)
            why = ("" if finished else " (interrupted)" if _signals.interrupted
                   else " after the failure")
            say(f"taking the lab down{why}...")
            t = time.monotonic()
            problems += _teardown(lab, machines, processes, graceful=finished, say=say)
            timings["down"] = time.monotonic() - t
        pool.shutdown(wait=True)  # the workers return once their machine is gone
    timings["total"] = time.monotonic() - started
    result = DemoResult(lab.name, accel, str(p.subnet), p.outside_ip, results, tuple(files),
                        timings, tuple(problems))
    summary = out / "summary.json"
    summary.write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return dataclasses.replace(result, files=(*result.files, summary))


def _never_raising(say: Say) -> Say:
    """``say``, minus its errors: a closed stdout (``| head``) must not stop the teardown."""
    def safe(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            say(message)
    return safe


def _step(say: Say) -> Callable[[str], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def step(message: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        except BaseException:
            say(f"  {message:<30} failed")
            raise
        say(f"  {message:<30} {time.monotonic() - t:5.2f} s")
    return step


def _clear_leftover(lab: labs.Lab, *, own: bool, say: Say) -> None:
    rec = labrec.load(lab.name)
    if rec is None:
        return
    if not own or Path(rec.file) != lab.path.resolve():
        raise StateError(f"lab {lab.name!r} is already up (from {rec.file}); the demo leaves "
                         f"it alone: take it down with 'vmanager down {lab.name}' and run "
                         "the demo again")
    with _signals.shield(say):
        say(f"lab {lab.name!r} was left up by an earlier run that did not finish; taking it "
            "down first")
        labs.down(lab.name, timeout=60.0)


def _processes(lab: labs.Lab) -> list[ProcessIdentity]:
    """The QEMU and dnsmasq processes the lab runs, to check they are gone afterwards."""
    found = []
    rec = labrec.load(lab.name)
    for item in rec.made if rec else ():
        ident = item.get("dnsmasq")
        if ident:
            found.append(ProcessIdentity(int(ident["pid"]), tuple(ident["argv"]),
                                         int(ident["starttime"])))
    for m in lab.machines:
        mrec = records.find(m.name)
        if mrec is not None and mrec.runtime is not None:
            found.append(mrec.runtime.identity)
    return found


def _parallel(pool: ThreadPoolExecutor, tasks: dict[str, Callable[[float], T]],
              timeout: float) -> dict[str, T]:
    """Run ``task(timeout)`` for every machine at once; the first failure is raised."""
    futures: dict[str, Future[T]] = {n: pool.submit(task, timeout) for n, task in tasks.items()}
    done: dict[str, T] = {}
    for name, f in futures.items():
        try:
            done[name] = f.result(timeout + 10.0)
        except TimeoutError as exc:
            if f.done():
                raise  # the task's own timeout, which names what it waited for
            raise GuestError(f"machine {name!r}: no answer within {timeout + 10.0:g} s") from exc
    return done


def _dhcp_task(m: Machine) -> Callable[[float], str | None]:
    def task(timeout: float) -> str | None:
        m.execute(DHCP, timeout=timeout)  # the address, if any, is what counts
        shown = m.succeed("ip -o -4 addr show dev eth0", timeout=timeout)
        found = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", shown)
        return found.group(1) if found else None
    return task


def _ping_task(m: Machine, name: str,
               targets: dict[str, str | None]) -> Callable[[float], list[PingResult]]:
    def task(timeout: float) -> list[PingResult]:
        out = []
        for target, address in targets.items():
            if target == name:
                continue
            if address is None:
                out.append(PingResult(target, None, False))
                continue
            r = m.execute(f"ping -c 1 -W 3 {address}", timeout=timeout)
            rtt = re.search(r"time=([\d.]+) ms", r.stdout)
            out.append(PingResult(target, address, r.status == 0,
                                  float(rtt.group(1)) if rtt else None))
        return out
    return task


def _address_problems(name: str, address: str | None, lease: str | None,
                      subnet: ipaddress.IPv4Network) -> list[str]:
    if address is None:
        return [f"{name} got no DHCP address"]
    if ipaddress.IPv4Address(address) not in subnet:
        return [f"{name}'s address {address} is not in the router's subnet {subnet}"]
    if lease != address:
        return [f"{name} has {address} but the router's lease says {lease}"]
    return []


def _screenshot(m: Machine, path: Path, outside: str) -> None:
    """Put the guest's own view of the network on tty1, then take the PNG."""
    m.succeed("chvt 1; echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null; "
              "clear > /dev/tty1", timeout=STEP_TIMEOUT)
    m.succeed(f"{{ echo \"vmanager demo: $(hostname)\"; echo; ip -4 addr show dev eth0; "
              f"echo; ip route; echo; ping -c 2 -W 3 {outside}; }} > /dev/tty1 2>&1; true",
              timeout=STEP_TIMEOUT)
    time.sleep(0.2)  # let the framebuffer console draw the last lines
    m.screenshot(path)


# -- teardown ---------------------------------------------------------------------------

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


# -- output -----------------------------------------------------------------------------

def summary_table(result: DemoResult) -> str:
    """The summary as a text table: one row per machine, one column per ping target."""
    targets = [m.name for m in result.machines] + ["outside"]
    headers = ["machine", "address (DHCP)", "MAC", "boot", *(f"to {t}" for t in targets)]
    rows = []
    for m in result.machines:
        pings = {p.target: p for p in m.pings}
        cells = []
        for t in targets:
            p = pings.get(t)
            cells.append("-" if p is None else "FAIL" if not p.ok else
                         f"ok {p.rtt_ms:.1f} ms" if p.rtt_ms is not None else "ok")
        rows.append([m.name, m.address or "none", m.mac,
                     f"{m.boot_s:.1f} s" if m.boot_s is not None else "-", *cells])
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [headers, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def _jsonable(result: DemoResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["files"] = [str(f) for f in result.files]
    data["ok"] = result.ok
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 all worked, 1 failed, 130 interrupted)."""
    parser = argparse.ArgumentParser(
        prog="python -m vmanager.demo",
        description="Bring up a lab of three tiny guests, a switch and a NAT router with an "
                    "outside namespace; show DHCP addresses, ping, take a screenshot and "
                    "draw the topology; then take it all down again.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"where to write the files (default ./{DEFAULT_OUT})")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None,
                        help="accelerator for the guests (default: the lab's, 'auto')")
    parser.add_argument("--lab", type=Path, default=None, metavar="FILE",
                        help="another lab file of the same shape (default: the packaged "
                             "demo lab, examples/demo-lab.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    args = parser.parse_args(argv)
    if args.verbose:
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    with _signals.installed_in_main():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        lab = labs.load(args.lab) if args.lab else packaged_lab()
        if args.accel:
            lab = with_accel(lab, args.accel)
        out = args.out.resolve()
        print(f"vmanager demo: lab {lab.name!r} from {lab.path}")
        result = run(lab, out=out, own_leftover=args.lab is None)
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    except VmanagerError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(summary_table(result))
    t = result.timings
    print()
    print(f"accelerator {result.accel}; lab up {t.get('lab up', 0):.1f} s, guests booted "
          f"{t.get('boot', 0):.1f} s, DHCP {t.get('dhcp', 0):.1f} s, pings "
          f"{t.get('pings', 0):.1f} s, down {t.get('down', 0):.1f} s; total "
          f"{t.get('total', 0):.1f} s")
    print(f"files in {out}:")
    for f in result.files:
        print(f"  {f.name}")
    if result.problems:
        print("\nproblems:", file=sys.stderr)
        for problem in result.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("all steps worked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
