"""The demo: boot the tiny guest, run a command in it, report, stop.

Run with ``python -m vmanager.demo`` (``scripts/setup demo`` installs first).
"""

from __future__ import annotations

import argparse
import sys
import time

from vmanager import Machine, tiny_guest
from vmanager.errors import VmanagerError


def main(argv: list[str] | None = None) -> int:
    """Boot, run ``uname -a`` in the guest, print timings, stop. Returns an exit status."""
    parser = argparse.ArgumentParser(prog="vmanager-demo", description=__doc__)
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    args = parser.parse_args(argv)
    try:
        t0 = time.monotonic()
        guest = tiny_guest(progress=lambda msg: print(f"guest: {msg}", flush=True))
        print(f"tiny guest: kernel {guest.kernel_version} ({time.monotonic() - t0:.1f} s)")
        with Machine("demo", accel=args.accel, memory=256,
                     **guest.machine_args("demo")) as m:
            t1 = time.monotonic()
            m.start_vm()
            qmp = time.monotonic() - t1
            boot = m.wait_ready(timeout=120)
            out = m.succeed("uname -a; echo; cat /proc/cmdline")
            print(f"accelerator: {m.accel}")
            print(f"QMP answered {qmp * 1000:.0f} ms after start_vm(); shell ready after "
                  f"{boot:.2f} s")
            print("the guest said:")
            for line in out.splitlines():
                print(f"  | {line}")
            t2 = time.monotonic()
        print(f"stopped (ACPI power-off) in {time.monotonic() - t2:.2f} s")
    except VmanagerError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
