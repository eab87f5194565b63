"""Machine commands: define, start, stop, console, exec, screenshots, snapshots..."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmanager import state
from vmanager.cli import console
from vmanager.cli._output import Progress, emit_json, table
from vmanager.errors import ConfigError, ShutdownTimeout, StateError
from vmanager.state import records
from vmanager.state.persist import (
    PersistentMachine,
    nvram_path,
    remove_image_overlay,
    remove_nvram,
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


def _parse_disk(text: str) -> dict[str, Any]:
    path, _, size = text.partition(":")
    if not path:
        raise ConfigError(f"--disk {text!r}: give PATH or PATH:SIZE")
    disk: dict[str, Any] = {"path": str(Path(path).resolve()), "format": "qcow2",
                            "interface": "virtio"}
    if size:
        disk["size"] = size
    return disk


def _cloud_init_file(text: str) -> dict[str, Any]:
    """A ``--cloud-init`` file: TOML or JSON with the keys of :class:`~vmanager.CloudInit`."""
    import json
    import tomllib

    from vmanager.images.cloudinit import CloudInit
    path = Path(text)
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--cloud-init {text}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"--cloud-init {text}: not valid "
                          f"{'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    CloudInit.from_mapping(data)  # names the bad field now, not at start
    return dict(data)


def cmd_define(args: argparse.Namespace) -> int:
    definition: dict[str, Any] = {
        "memory": args.memory, "cpus": args.cpus, "accel": args.accel, "nics": args.nics,
        "disks": [_parse_disk(d) for d in args.disk],
        "cd": str(Path(args.cd).resolve()) if args.cd else None,
        # UEFI variables are kept between starts, as libvirt keeps a defined domain's
        "firmware": args.firmware,
        "nvram": str(nvram_path(args.name)) if args.firmware == "uefi" else None,
    }
    if args.guest:
        definition["guest"] = args.guest
    elif args.kernel:
        definition.update(kernel=str(Path(args.kernel).resolve()),
                          initrd=str(Path(args.initrd).resolve()) if args.initrd else None,
                          append=args.append)
    elif not definition["disks"] and not definition["cd"]:
        raise ConfigError("nothing to boot: give --guest, --kernel, --disk or --cd")
    if args.cloud_init:
        definition["cloud_init"] = _cloud_init_file(args.cloud_init)
    record = records.MachineRecord(args.name, definition=definition, persistent=True)
    # build once without starting: validates names, sizes and files now
    state.build_machine(record, for_attach=True)
    with state.locked("machine", args.name):
        existing = records.find(args.name)
        if existing is not None and not args.force:
            raise StateError(f"machine {args.name!r} is already defined (--force replaces "
                             "its definition)", state="defined")
        if existing is not None:
            if existing.lab is not None:
                raise StateError(f"machine {args.name!r} belongs to lab {existing.lab!r}")
            record = replace(record, runtime=existing.runtime)
        records.save(record)
    _say(args, {"name": args.name, "defined": True}, f"defined {args.name}")
    return 0


def cmd_undefine(args: argparse.Namespace) -> int:
    with state.locked("machine", args.name):
        record = records.load(args.name)
        if record.lab is not None:
            raise StateError(f"machine {args.name!r} belongs to lab {record.lab!r}; "
                             "'vmanager down' removes it")
        if records.liveness(record) is not None:
            raise StateError(f"machine {args.name!r} has a runtime record; stop it (or "
                             "'vmanager clean' a stale one) first", state="running")
        records.delete(args.name)
        disk = remove_image_overlay(args.name, record.definition)
        remove_nvram(args.name, record.definition)
    _say(args, {"name": args.name, "undefined": True, "removed_disk": str(disk) if disk else None},
         f"undefined {args.name}" + (f" (removed its disk {disk})" if disk else ""))
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
    _say(args, info, f"{args.name} running (pid {info['pid']}, {info['accel']})")
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
    _say(args, {"name": args.name, "stopped": True}, f"{args.name} stopped")
    return 0


def cmd_freeze(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        if args.command == "freeze":
            m.freeze()
        else:
            m.unfreeze()
        st = m.status()
    _say(args, {"name": args.name, "status": st}, f"{args.name}: {st}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    st = records.clear_stale(args.name)
    _say(args, {"name": args.name, "cleaned": True, "was": st.detail},
         f"{args.name}: removed the stale runtime record ({st.detail or 'not started'})")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    command = " ".join(args.cmd)
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
    _say(args, {"name": args.name, "file": str(path)}, f"saved {path}")
    return 0


def cmd_send_key(args: argparse.Namespace) -> int:
    with attached(args.name, args.timeout) as m:
        for combo in args.keys:
            m.send_key(combo)
    _say(args, {"name": args.name, "keys": args.keys}, f"sent {' '.join(args.keys)}")
    return 0


def cmd_type(args: argparse.Namespace) -> int:
    text = args.text.encode().decode("unicode_escape") if args.escapes else args.text
    with attached(args.name, args.timeout) as m:
        typer = getattr(m, "type_text", None)
        if typer is None:
            raise StateError("typing text needs the screen package's type_text(), "
                             "which this build lacks")
        typer(text)
    _say(args, {"name": args.name, "typed": len(text)}, f"typed {len(text)} characters")
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
    _say(args, {"name": args.name, "action": action, "snapshot": args.snap},
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


def _say(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        emit_json(data)
    elif not args.quiet:
        print(text)


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
    p = add("define", cmd_define, "record a machine definition (persistent, like virsh define)")
    p.add_argument("name")
    boot = p.add_mutually_exclusive_group()
    from vmanager.images import DISTRIBUTIONS
    boot.add_argument("--guest", choices=("tiny", *sorted(DISTRIBUTIONS)),
                      help="boot vmanager's tiny test guest, or an overlay of an image "
                      "vmanager builds (debian-12: built and cached on first start)")
    boot.add_argument("--kernel", help="boot this kernel directly")
    p.add_argument("--initrd")
    p.add_argument("--append", help="kernel command line")
    p.add_argument("--memory", default=256, help="RAM, MiB or with a unit (default 256)")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--firmware", choices=("bios", "uefi"), default="bios",
                   help="SeaBIOS (default) or UEFI (OVMF; its variable store is kept "
                        "between starts and removed by undefine)")
    p.add_argument("--disk", action="append", default=[], metavar="PATH[:SIZE]",
                   help="a qcow2 disk; created with SIZE on first start if missing")
    p.add_argument("--cd", metavar="ISO")
    p.add_argument("--nics", type=int, default=0,
                   help="NICs in the machine's own network namespace")
    p.add_argument("--cloud-init", metavar="FILE",
                   help="a cloud-init seed for the machine: a TOML (or .json) file with "
                   "the keys of a lab's cloud_init table (hostname, users, password, "
                   "ssh_authorized_keys, runcmd, packages, network_config)")
    p.add_argument("--force", action="store_true", help="replace an existing definition")
    p = add("undefine", cmd_undefine, "forget a stopped machine's definition")
    p.add_argument("name")
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
