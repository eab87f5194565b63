"""Live lab commands: impair, capture, checkpoint, rollback, checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from vmanager.cli._output import emit_json, table


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (and SIGHUP) end the command like Ctrl-C, so cleanup runs."""
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt
    old = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def cmd_impair(args: argparse.Namespace) -> int:
    from vmanager.cli.remote import read_lab
    from vmanager.lab import tools
    from vmanager.net import impair
    lab = read_lab(args.file, args.server, args.place)
    values = {k: getattr(args, k) for k in ("delay", "jitter", "loss", "rate", "corrupt",
                                            "duplicate", "reorder")}
    given = {k: v for k, v in values.items() if v is not None}
    if args.clear and given:
        raise SystemExit("vmanager impair: --clear takes no other values")
    if args.clear:
        tools.clear_nic(lab, args.target)
        now = tools.nic_impairment(lab, args.target)
    elif given:
        now = tools.impair_nic(lab, args.target, impair.impairment(**given))
    else:  # --show, or nothing: show
        now = tools.nic_impairment(lab, args.target)
    if args.json:
        emit_json({"lab": lab.name, "target": args.target, "direction": "egress",
                   **now.as_dict()})
    elif not args.quiet or args.show:
        print(f"{args.target}: {now.describe() or 'not impaired'}")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from vmanager.cli.remote import read_lab
    from vmanager.lab import tools
    lab = read_lab(args.file, args.server, args.place)
    to_stdout = args.write == "-"
    out: Any = sys.stdout.buffer if to_stdout else args.write
    if to_stdout:
        sys.stdout.flush()
    cap = tools.capture(lab, args.target, out, count=args.count, duration=args.duration,
                        filter=args.filter)
    with _sigterm_interrupts():
        try:
            cap.start()
            if not args.quiet:
                print(f"capturing on {args.target} to {args.write}"
                      + (f" ({args.count} frames)" if args.count else "")
                      + (f" for {args.duration:g} s" if args.duration else "")
                      + "; Ctrl-C stops", file=sys.stderr)
            with tools.registered(lab, args.target, cap):
                cap.wait()
        except KeyboardInterrupt:
            pass
        finally:
            cap.stop()
    if args.json and not to_stdout:
        emit_json({"lab": lab.name, "target": args.target, "file": args.write,
                   "frames": cap.frames})
    elif not args.quiet:
        print(f"{cap.frames if cap.frames is not None else '?'} frames captured",
              file=sys.stderr)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    lab = labs.load(args.file)
    if args.delete:
        lab.delete_checkpoint(args.name)
        if args.json:
            emit_json({"lab": lab.name, "deleted": args.name})
        elif not args.quiet:
            print(f"lab {lab.name}: checkpoint {args.name} deleted")
        return 0
    made = lab.checkpoint(args.name)
    if args.json:
        emit_json(made.as_dict())
    elif not args.quiet:
        print(f"lab {lab.name}: checkpoint {made.name} of {len(made.machines)} machines "
              f"in {made.seconds:.2f} s")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    lab = labs.load(args.file)
    done = lab.rollback(args.name)
    if args.json:
        emit_json({"lab": done.lab, "name": done.name, "seconds": done.seconds,
                   "machines": list(done.machines)})
    elif not args.quiet:
        print(f"lab {lab.name}: rolled back to {done.name} ({len(done.machines)} machines) "
              f"in {done.seconds:.2f} s")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    lab = labs.load(args.file)
    found = lab.checkpoints()
    if args.json:
        emit_json([c.as_dict() for c in found])
    elif found:
        table(["name", "created", "seconds", "machines"],
              [[c.name, c.as_dict()["created_iso"], f"{c.seconds:.2f}",
                ", ".join(c.machines)] for c in found])
    else:
        print(f"lab {lab.name} has no checkpoints")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register impair, capture, checkpoint, rollback and checkpoints."""
    def add(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text,
                                                    parents=[common])
        p.set_defaults(func=func)
        p.add_argument("file", help="the lab's file")
        return p

    p = add("impair", cmd_impair, "impair what a lab machine sends through a NIC (netem: "
            "delay, jitter, loss, rate...); live, until --clear or the machine restarts")
    p.add_argument("target", metavar="MACHINE:INDEX")
    p.add_argument("--delay", help="e.g. 40ms")
    p.add_argument("--jitter", help="e.g. 5ms (needs --delay)")
    p.add_argument("--loss", help="e.g. 1%%")
    p.add_argument("--rate", help="e.g. 10mbit")
    p.add_argument("--corrupt", help="e.g. 0.1%%")
    p.add_argument("--duplicate", help="e.g. 1%%")
    p.add_argument("--reorder", help="e.g. 25%% (needs --delay)")
    p.add_argument("--clear", action="store_true", help="remove the impairment")
    p.add_argument("--show", action="store_true", help="print the impairment (default "
                   "without values)")
    impair_p = p
    p = add("capture", cmd_capture, "capture frames on a lab NIC or port into a pcap file "
            "(tcpdump)")
    p.add_argument("target", metavar="MACHINE:INDEX|ROUTER|HOST|SWITCH")
    p.add_argument("-w", "--write", required=True, metavar="FILE.pcap",
                   help="the pcap file (made 0600); '-' streams to stdout")
    p.add_argument("-c", "--count", type=int, help="stop after this many frames")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("-f", "--filter", metavar="EXPR",
                   help="a tcpdump filter expression, e.g. 'icmp or arp'")
    for tool in (impair_p, p):  # the part a server runs when the target is there
        tool.add_argument("--server", metavar="NAME", help=argparse.SUPPRESS)
        tool.add_argument("--place", action="append", default=[], metavar="MACHINE=SERVER",
                          help=argparse.SUPPRESS)
    p = add("checkpoint", cmd_checkpoint, "save every machine of a lab at one moment "
            "(paused together), or --delete a checkpoint")
    p.add_argument("name")
    p.add_argument("--delete", action="store_true", help="delete the checkpoint")
    p = add("rollback", cmd_rollback, "return every machine of a lab to a checkpoint "
            "(RAM, devices, disks); the network stays as it is")
    p.add_argument("name")
    add("checkpoints", cmd_checkpoints, "list a lab's checkpoints")
