"""Run every vmanager benchmark, print a table and write JSON results.

    .venv/bin/python bench/run.py [--quick|--full] [--out FILE] [--only NAME ...]

Each row is measured side by side with its baseline in the same run and
repeated; the table quotes medians and spreads (IQR with 4+ samples, else
min-max) and the ratio to the baseline. A benchmark that cannot run here says
why in its row; the rest still run. Everything a benchmark makes (QEMU
processes, namespaces, links, libvirt domains and daemons) is removed, also
on failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import host
from bench.context import Context
from bench.core import Row, Skip, table
from vmanager.guests import TinyGuest

Bench = Callable[[Context], list[Row]]


def _benchmarks() -> dict[str, tuple[str, Bench]]:
    from bench import (
        console,
        density,
        labrollback,
        libvirt,
        lifecycle,
        migration,
        multihost,
        netplumb,
        plainpc,
        realos,
        screen,
        snapshot,
        stop,
    )
    return {
        "mgmt": ("start until QMP answers", lifecycle.management_overhead),
        "libvirt": ("virsh start", libvirt.virsh_start),
        "boot": ("boot to shell + idle RSS", lifecycle.boot_and_memory),
        "stop": ("stop a running guest", stop.stop),
        "plain": ("boot vs plain pc", plainpc.boot_vs_plain),
        "snapshot": ("live snapshot load", snapshot.snapshot_load),
        "net": ("network plumbing", netplumb.plumbing),
        "screen": ("screenshot", screen.screenshot),
        "migrate": ("migration", migration.migration),
        "labrollback": ("lab rollback vs cold up", labrollback.lab_rollback),
        "density": ("50 machines", density.fifty_machines),
        "density-template": ("50 machines from a template", density.fifty_clones),
        "console": ("console throughput", console.console_throughput),
        "multihost": ("labs across servers", multihost.multihost),
        "realos": ("Debian 12: boot to agent, ACPI power-off", realos.boot_and_poweroff),
        "realos-uefi": ("Debian 12 under UEFI: boot to agent, power-off",
                        realos.uefi_boot_and_poweroff),
        "realos-build": ("Debian 12 image build", realos.build),
    }


def _private_guest(guest: TinyGuest, into: Path) -> TinyGuest:
    """A copy of the tiny guest's files that a rebuild of the shared cache cannot pull away."""
    into.mkdir(mode=0o755)
    kernel, initrd = into / guest.kernel.name, into / guest.initrd.name
    shutil.copyfile(guest.kernel, kernel)
    shutil.copyfile(guest.initrd, initrd)
    return dataclasses.replace(guest, kernel=kernel, initrd=initrd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="about a minute (default)")
    mode.add_argument("--full", action="store_true", help="more repetitions")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/results/<time>.json)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these benchmarks: " + ", ".join(_benchmarks()))
    parser.add_argument("--libvirt", action="store_true",
                        help="include the libvirt row in quick mode (adds about a minute)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import vmanager
    from vmanager.qemu import accel as _accel
    from vmanager.qemu import launch

    benches = _benchmarks()
    selected = args.only or list(benches)
    unknown = [n for n in selected if n not in benches]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    qemu = launch.find_qemu()
    accel = _accel.choose("auto", qemu)
    kvm_note = ("usable" if accel == "kvm" else
                "/dev/kvm present but the probe guest did not run (e.g. nested kvm_pvm)"
                if Path("/dev/kvm").exists() else "no /dev/kvm")
    machine = host.describe(qemu, accel, kvm_note)
    work = Path(tempfile.mkdtemp(prefix="vmanager-bench-"))
    guest = _private_guest(vmanager.tiny_guest(), work / "guest")
    machine["guest_kernel"] = guest.kernel_version
    ctx = Context(guest=guest, qemu=qemu, accel=accel, work=work, full=args.full,
                  libvirt=args.libvirt)
    rows: list[Row] = []
    started = time.monotonic()
    try:
        for name in selected:
            title, fn = benches[name]
            print(f"bench: {title} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                rows.extend(fn(ctx))
            except Skip as exc:
                rows.append(Row(title, "", note=f"not measured: {exc}"))
            except Exception as exc:
                traceback.print_exc()
                rows.append(Row(title, "", note=f"failed: {type(exc).__name__}: {exc}"))
            print(f"bench: {title}: {time.monotonic() - t0:.1f} s", file=sys.stderr,
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started

    print()
    print(table(rows))
    print(f"\n{'full' if args.full else 'quick'} run, {elapsed:.0f} s; {machine['qemu']}, "
          f"accel {accel}, {machine['cores']} cores ({machine['cpu_model']})")
    out = args.out or (Path(__file__).parent / "results" /
                       f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "full" if args.full else "quick",
        "command": " ".join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])]),
        "seconds": round(elapsed, 1),
        "machine": machine,
        "rows": [r.to_json() for r in rows],
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
