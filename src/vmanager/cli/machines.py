"""Machine commands: define, start, stop, console, exec, screenshots, snapshots..."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmanager import state
from vmanager.cli import console, definitions, templates
from vmanager.cli._output import Progress, emit_json, say, table
from vmanager.errors import ConfigError, ShutdownTimeout, StateError
from vmanager.state import records
from vmanager.state.persist import (
    PersistentMachine,
)

#: Ctrl-] leaves ``vmanager console``, as in telnet and virsh.
ESCAPE = b"\x1d"


@contextlib.contextmanager
def attached(name: str, timeout: float) -> Iterator[PersistentMachine]:
    """Attach for the duration of a command, then let go (the machine runs on)."""
    machine = state.attach(name, timeout=timeout)
    try:
        yield machine
    finally:
        if machine.is_alive():
            state.detach(machine)


def cmd_list(args: argparse.Namespace) -> int:
    rows = state.statuses()
    if args.json:
        emit_json([s.to_json() for s in rows])
        return 0
    if not rows:
        print("no machines")
        return 0
    table(["name", "state", "pid", "accel", "lab", "detail"],
          [[s.name, s.state, s.pid, s.record.runtime.accel if s.record.runtime else None,
            s.record.lab, s.detail] for s in rows])
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    record = records.load(args.name)
    progress = Progress(quiet=args.json or args.quiet)
    if record.lab is not None:
        from vmanager.lab import runner
        with progress.step(f"starting {args.name} (lab {record.lab})"):
            machine = runner.start_lab_machine(record)
    else:
        machine = state.build_machine(record)
        with progress.step(f"starting {args.name}"):
            machine.start_vm(timeout=args.timeout)
    try:
        boot = None
        if args.wait_ready:
            with progress.step(f"waiting for {args.name} (its shell or guest agent)"):
                boot = machine.wait_ready(timeout=args.timeout)
        info = {"name": args.name, "pid": machine.pid, "accel": machine.accel,
                "ready_after": round(boot, 2) if boot is not None else None}
    except BaseException:
        machine.kill()
        raise
    state.detach(machine)
    say(args, info, f"{args.name} running (pid {info['pid']}, {info['accel']})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    machine = state.attach(args.name, timeout=args.timeout)
    progress = Progress(quiet=args.json or args.quiet)
    with progress.step(f"stopping {args.name}"):
        if args.command == "kill":
            machine.kill()
        elif args.graceful:
            try:
                machine.shutdown(timeout=args.timeout)
            except ShutdownTimeout:
                state.detach(machine)  # it runs on; the user decides
                raise
        else:
            machine.stop()
    say(args, {"name": args.name, "stopped": True}, f"{args.name} stopped")
    return 0


def cmd_freeze(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        if args.command == "freeze":
            m.freeze()
        else:
            m.unfreeze()
        st = m.status()
    say(args, {"name": args.name, "status": st}, f"{args.name}: {st}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    st = records.clear_stale(args.name)
    say(args, {"name": args.name, "cleaned": True, "was": st.detail},
         f"{args.name}: removed the stale runtime record ({st.detail or 'not started'})")
    return 0


def guest_command(words: list[str]) -> str:
    """One word is a shell command line; several are a command and its arguments.

    Several are quoted for the guest's shell, as ``docker exec`` keeps them apart:
    ``exec m -- sh -c "a; b"`` runs ``sh`` with the two arguments given.
    """
    return words[0] if len(words) == 1 else shlex.join(words)


def cmd_exec(args: argparse.Namespace) -> int:
    command = guest_command(args.cmd)
    with attached(args.name, args.timeout) as m:
        result = m.execute(command, timeout=args.timeout)
    if args.json:
        emit_json({"status": result.status, "stdout": result.stdout, "stderr": result.stderr})
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    return result.status


def cmd_monitor(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        if args.qmp:
            import json
            arguments = json.loads(args.arguments) if args.arguments else None
            out: Any = m.qmp(args.cmd[0], arguments, timeout=args.timeout)
            emit_json(out)
            return 0
        text = m.monitor(" ".join(args.cmd), timeout=args.timeout)
    if args.json:
        emit_json({"output": text})
    else:
        sys.stdout.write(text)
    return 0


def cmd_screenshot(args: argparse.Namespace) -> int:
    if args.file == "-":  # to stdout (how a lab's server sends one back)
        from vmanager.cli.remote import screenshot_to_stdout
        return screenshot_to_stdout(args.name, args.timeout)
    path = Path(args.file).resolve()
    with attached(args.name, args.timeout) as m:
        shot = getattr(m, "screenshot", None)
        if shot is not None:
            shot(path)
        else:
            fmt = "png" if path.suffix.lower() == ".png" else "ppm"
            m.qmp("screendump", {"filename": str(path), "format": fmt})
    say(args, {"name": args.name, "file": str(path)}, f"saved {path}")
    return 0


def cmd_send_key(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        for combo in args.keys:
            m.send_key(combo)
    say(args, {"name": args.name, "keys": args.keys}, f"sent {' '.join(args.keys)}")
    return 0


def cmd_type(args: argparse.Namespace) -> int:
    text = args.text.encode().decode("unicode_escape") if args.escapes else args.text
    with attached(args.name, args.timeout) as m:
        typer = getattr(m, "type_text", None)
        if typer is None:
            raise StateError("typing text needs the screen package's type_text(), "
                             "which this build lacks")
        typer(text)
    say(args, {"name": args.name, "typed": len(text)}, f"typed {len(text)} characters")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        action = args.action
        if action == "list":
            snaps = [s.name for s in m.snapshots()]
            if args.json:
                emit_json(snaps)
            else:
                print("\n".join(snaps) if snaps else "no snapshots")
            return 0
        if not args.snap:
            raise ConfigError(f"snapshot {action} needs a snapshot name")
        if action == "save":
            m.snapshots.save(args.snap)
        elif action == "load":
            m.snapshots.load(args.snap)
        else:
            m.snapshots.delete(args.snap)
    say(args, {"name": args.name, "action": action, "snapshot": args.snap},
         f"{args.name}: {action} {args.snap}")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        if args.dump:
            sys.stdout.write(m.console.read())
            return 0
        if sys.stdin.isatty() and not args.batch:
            return console.interactive(m, escape=ESCAPE)
        return console.batch(m, args.wait)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the machine commands on ``sub``."""
    def add(name: str, func: Any, help_text: str, *, timeout: float = 30.0,
            aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text,
                                                    description=help_text,
                                                    parents=[common], aliases=list(aliases))
        p.set_defaults(func=func)
        p.add_argument("--timeout", type=float, default=timeout, metavar="S",
                       help=f"seconds to wait for the machine (default {timeout:g})")
        return p

    p = add("list", cmd_list, "list machines and their state (stale records included)",
            aliases=("ls",))
    definitions.add_parsers(add)
    templates.add_parsers(add)
    p = add("start", cmd_start, "start a defined (or lab) machine; it keeps running after "
            "this command exits", timeout=120.0)
    p.add_argument("name")
    p.add_argument("--wait-ready", action="store_true",
                   help="wait until the guest's backdoor shell or guest agent answers")
    p = add("stop", cmd_stop, "stop a machine by force (QMP quit, which flushes its disks, "
            "then SIGKILL); --graceful powers it off through ACPI instead")
    p.add_argument("name")
    p.add_argument("--graceful", action="store_true",
                   help="press the ACPI power button and wait up to --timeout seconds for "
                        "the guest to power off; if it does not, it is left running "
                        "(exit status 8)")
    p = add("kill", cmd_stop, "stop a machine at once (SIGKILL)")
    p.add_argument("name")
    for name, text in (("freeze", "pause a machine's vCPUs"),
                       ("unfreeze", "resume a frozen machine")):
        p = add(name, cmd_freeze, text)
        p.add_argument("name")
    p = add("clean", cmd_clean, "remove a stale record after checking that its QEMU is gone "
            "(no process is signalled)")
    p.add_argument("name")
    p = add("console", cmd_console, "the serial console: interactive on a terminal "
            "(Ctrl-] leaves), else stdin is typed in and the output printed")
    p.add_argument("name")
    p.add_argument("--dump", action="store_true",
                   help="print everything the console showed so far and exit")
    p.add_argument("--batch", action="store_true", help="non-interactive even on a terminal")
    p.add_argument("--wait", type=float, default=1.0, metavar="S",
                   help="batch mode: stop after S seconds without output (default 1)")
    p = add("exec", cmd_exec, "run a shell command in the guest (its backdoor shell, or "
            "else the QEMU guest agent); exits with the command's status", timeout=60.0)
    p.add_argument("name")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --, if it "
                   "has options); options between NAME and it are vmanager's")
    p.set_defaults(exec_parser=p)
    p = add("monitor", cmd_monitor, "run a human monitor command (or a QMP one with --qmp)")
    p.add_argument("name")
    p.add_argument("cmd", nargs="+")
    p.add_argument("--qmp", action="store_true", help="CMD is a QMP command; output is JSON")
    p.add_argument("--arguments", metavar="JSON", help="QMP arguments as a JSON object")
    p = add("screenshot", cmd_screenshot, "save the machine's screen (PNG by extension)")
    p.add_argument("name")
    p.add_argument("file")
    p = add("send-key", cmd_send_key, "press key combinations such as ctrl-alt-f2")
    p.add_argument("name")
    p.add_argument("keys", nargs="+")
    p = add("type", cmd_type, "type text on the machine's keyboard")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("-e", "--escapes", action="store_true", help="interpret \\n and friends")
    p = add("snapshot", cmd_snapshot, "save, load, list or delete live snapshots",
            timeout=120.0)
    p.add_argument("name")
    p.add_argument("action", choices=("save", "load", "list", "delete"))
    p.add_argument("snap", nargs="?")
    del p


def exec_args_ok(args: argparse.Namespace, argv: list[str]) -> None:
    """``exec``'s command: vmanager's own options after NAME are parsed, not sent to the guest.

    REMAINDER takes all after NAME: leading ``exec`` options are parsed as if
    given before NAME, one ``--`` is dropped, the rest is the command verbatim
    (``exec NAME echo -- x`` echoes ``-- x``); an unknown option is an error.
    ``argv`` tells whether a ``--`` right after NAME was there (argparse drops it).
    """
    if args.func is not cmd_exec:
        return
    parser: argparse.ArgumentParser = args.exec_parser
    known = parser._option_string_actions
    cmd = list(args.cmd)
    start = len(argv) - len(cmd)  # the REMAINDER is argv's tail
    explicit = 0 < start <= len(argv) and argv[start - 1] == "--" and argv[start:] == cmd
    head: list[str] = []
    while not explicit and cmd and cmd[0].startswith("-") and cmd[0] != "--":
        option = cmd[0].split("=", 1)[0]
        action = known.get(option)
        if action is None:
            raise ConfigError(f"exec: unknown option {cmd[0]!r} after the machine's name; "
                              "put the guest's command after '--'")
        takes_value = action.nargs != 0 and "=" not in cmd[0]
        if takes_value and len(cmd) < 2:
            raise ConfigError(f"exec: option {option} needs a value")
        head += cmd[:2] if takes_value else cmd[:1]
        cmd = cmd[2:] if takes_value else cmd[1:]
    if not explicit and cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("exec needs a command to run in the guest")
    if head:
        # the defaults already set stay; only the options given here change
        parser.parse_args([*head, args.name], namespace=args)
    args.cmd = cmd


__all__ = ["ESCAPE", "add_parsers", "attached", "exec_args_ok"]
