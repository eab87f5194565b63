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
import dataclasses
import ipaddress
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vmanager import lab as labs
from vmanager.demo.output import (
    DemoResult,
    MachineResult,
    PingResult,
    Say,
    _jsonable,
    _never_raising,
    _say,
    _step,
    summary_table,
)
from vmanager.demo.tasks import (
    DHCP,
    STEP_TIMEOUT,
    _address_problems,
    _dhcp_task,
    _parallel,
    _ping_task,
    _screenshot,
)
from vmanager.demo.teardown import _signals, _teardown, leftovers
from vmanager.errors import ConfigError, StateError, VmanagerError
from vmanager.guests import tiny_guest
from vmanager.lab import record as labrec
from vmanager.machine import Machine
from vmanager.net.router import default_subnet
from vmanager.state import records
from vmanager.state.process import ProcessIdentity

#: The demo lab, shipped inside the package (a copy of ``examples/demo-lab.toml``).
PACKAGED_LAB = "examples/demo-lab.toml"
DEFAULT_OUT = Path("vmanager-demo-out")
DHCP_TIMEOUT = 60.0
BOOT_TIMEOUT = 120.0

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


__all__ = [
    "BOOT_TIMEOUT", "DHCP", "DHCP_TIMEOUT", "STEP_TIMEOUT", "DemoResult", "MachineResult",
    "PingResult", "Plan", "leftovers", "main", "packaged_lab", "plan", "run", "summary_table",
    "with_accel",
]
