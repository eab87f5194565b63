"""The CLI across servers: lab parts read from stdin, machine commands forwarded over SSH.

A machine command (``exec``, ``console``, ``screenshot``, ``stop``...) naming a
machine that is not on this host but that a lab placed on a server is run there
by the same ``vmanager`` argv over SSH, with this terminal's stdin, stdout and
stderr (``ssh -t`` when stdin is a terminal, for the interactive console);
its exit status is the command's. ``screenshot`` brings the image back here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, HostError

#: machine commands that run wherever the machine is
FORWARDED = {"exec", "console", "screenshot", "monitor", "send-key", "type", "stop", "kill",
             "start", "snapshot", "freeze"}
#: lab tools that run on the server of the object they target
LAB_TOOLS = {"impair", "capture"}


def read_lab(file: str, server: str | None, place: list[str] | None = None) -> Any:
    """The lab of ``file`` (``-``: stdin), or only the part ``server`` makes.

    ``place`` (``MACHINE=SERVER``...) says where migrated machines run now.
    """
    from vmanager import lab as labs
    from vmanager.lab import multi
    from vmanager.lab import servers as labservers
    lab = labs.parse(sys.stdin.read()) if file == "-" else labs.load(file)
    if place:
        lab = multi.apply_place(lab, place)
    if server is None:
        return lab
    if server not in {s.name for s in lab.servers}:
        raise ConfigError(f"lab {lab.name!r} has no server {server!r}; servers: "
                          f"{', '.join(s.name for s in lab.servers) or 'none'}")
    return labservers.part(lab, server)


def _is_local(name: str) -> bool:
    from vmanager.state import records
    return records.find(name) is not None


def forward(argv: Sequence[str], args: argparse.Namespace) -> int | None:
    """Run a machine command on the machine's server; ``None`` when it is local."""
    command = getattr(args, "command", None)
    if command in LAB_TOOLS:
        return _forward_lab_tool(argv, args)
    name = getattr(args, "name", None)
    if command not in FORWARDED or not isinstance(name, str) or _is_local(name):
        return None
    from vmanager.lab.multi import server_of
    server = server_of(name)
    if server is None:
        return None
    from vmanager.lab.remote import Remote, ssh_argv
    remote = Remote(server)
    remote.check_version()
    if command == "screenshot":
        return _screenshot(remote, argv, args)
    tty = command == "console" and sys.stdin.isatty() and not getattr(args, "batch", False)
    try:
        proc = subprocess.run(ssh_argv(server, list(argv), tty=tty), check=False)
    except FileNotFoundError as exc:
        raise HostError("cannot reach servers: OpenSSH's client (ssh) is not installed") from exc
    if proc.returncode == 255:
        from vmanager.lab.remote import ServerUnreachable
        raise ServerUnreachable(f"server {server.name!r} ({server.destination}) cannot be "
                                f"reached to run {command} on {name}", server=server.name)
    return proc.returncode


def _forward_lab_tool(argv: Sequence[str], args: argparse.Namespace) -> int | None:
    """``impair``/``capture`` of an object on a lab's server: run there, the lab file
    on stdin (``-``), with ``--server`` and where migrated machines are now."""
    if getattr(args, "server", None) is not None or args.file == "-":
        return None  # the server's own side, or a lab read from stdin: here
    from vmanager import lab as labs
    from vmanager.lab import multi
    from vmanager.lab.remote import Remote, ssh_argv
    lab = labs.load(args.file)
    name, colon, _ = args.target.partition(":")
    placed = multi.placement(lab)
    where = placed.get(name) if colon else None
    if not colon:
        where = next((r.server for r in lab.routers if r.name == args.target),
                     next((h.server for h in lab.hosts if h.name == args.target), None))
    server = next((s for s in lab.servers if s.name == where), None)
    if server is None:
        return None
    Remote(server).check_version()
    out = list(argv)
    at = out.index(args.command)
    out[out.index(args.file, at + 1)] = "-"
    _, place = multi.effective(lab)
    out += ["--server", server.name, *place]
    sink: Any = None
    if args.command == "capture" and args.write != "-":
        out[len(out) - 1 - out[::-1].index(args.write)] = "-"  # the pcap comes back here
        fd = os.open(args.write, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        sink = os.fdopen(fd, "wb")
    try:
        proc = subprocess.Popen(ssh_argv(server, out), stdin=subprocess.PIPE, stdout=sink)
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(lab.source.encode())
            proc.stdin.close()
        try:
            proc.wait()
        except KeyboardInterrupt:  # the remote capture stops on SIGHUP as on Ctrl-C
            proc.terminate()
            proc.wait()
    except FileNotFoundError as exc:
        raise HostError("cannot reach servers: OpenSSH's client (ssh) is not installed") from exc
    finally:
        if sink is not None:
            sink.close()
    if proc.returncode == 255:
        from vmanager.lab.remote import ServerUnreachable
        raise ServerUnreachable(f"server {server.name!r} ({server.destination}) cannot be "
                                f"reached to run {args.command} on {args.target}",
                                server=server.name)
    return proc.returncode


def _screenshot(remote: Any, argv: Sequence[str], args: argparse.Namespace) -> int:
    """Take the screenshot there into stdout, write it here."""
    out = list(argv)
    # the last positional is the file; replace it by "-" (stdout on the server)
    index = len(out) - 1 - out[::-1].index(args.file)
    out[index] = "-"
    from vmanager.lab.remote import ssh_argv
    proc = subprocess.run(ssh_argv(remote.server, out), capture_output=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        return proc.returncode
    path = Path(args.file).resolve()
    path.write_bytes(proc.stdout)
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(f"saved {path} (from server {remote.server.name})")
    return 0


def screenshot_to_stdout(name: str, timeout: float, suffix: str = ".png") -> int:
    """``vmanager screenshot NAME -``: the image on stdout (how a server sends it back)."""
    from vmanager.cli.machines import attached
    with tempfile.TemporaryDirectory(prefix="vmanager-shot-") as tmp:
        path = Path(tmp) / f"screen{suffix}"
        with attached(name, timeout) as m:
            shot = getattr(m, "screenshot", None)
            if shot is not None:
                shot(path)
            else:
                m.qmp("screendump", {"filename": str(path), "format": "png"})
        data = path.read_bytes()
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), data)
    return 0


# -- migration between servers --------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace) -> int:
    from vmanager.cli._output import Progress, emit_json
    from vmanager.lab import load
    from vmanager.lab.migrate import migrate
    lab = load(args.file)
    progress = Progress(quiet=args.json or args.quiet)
    with progress.step(f"migrating {args.machine} to {args.to}"):
        report = migrate(lab, args.machine, to=args.to, timeout=args.timeout,
                         downtime_ms=args.downtime_ms, shared_storage=args.shared_storage,
                         progress=progress.callback())
    data = {"machine": report.machine, "from": report.source, "to": report.target,
            "total_ms": report.total_ms, "downtime_ms": report.downtime_ms,
            "transferred": report.transferred, "wall_s": report.wall_s,
            "disks": report.disks, "mirror_s": report.mirror_s}
    if args.json:
        emit_json(data)
    elif not args.quiet:
        print(f"{report.machine}: {report.source} -> {report.target} in {report.total_ms} ms "
              f"(downtime {report.downtime_ms} ms, {report.transferred >> 20} MiB; "
              f"{report.wall_s:.1f} s in all)")
        for d in report.disks:
            print(f"  disk {d['path']} ({int(d['size']) >> 20} MiB) moved to {report.target}")
    return 0


def cmd_migrate_receive(args: argparse.Namespace) -> int:
    import json

    from vmanager.cli._output import emit_json
    from vmanager.lab.migrate_ends import receive
    try:
        definition = json.loads(args.definition)
    except ValueError as exc:
        raise ConfigError(f"--definition is not JSON: {exc}") from exc
    if not isinstance(definition, dict):
        raise ConfigError("--definition must be a JSON object")
    result = receive(args.lab, args.machine, definition, stream=sys.stdin.fileno(),
                     timeout=args.timeout, disks=_json_list(args.mirror, "--mirror"))
    emit_json(result)
    return 0


def cmd_migrate_send(args: argparse.Namespace) -> int:
    from vmanager.lab.migrate_ends import send
    out = os.dup(sys.stdout.fileno())
    # nothing else may write to the stream: stdout becomes stderr for this process
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    send(args.machine, stream=out, control=sys.stdin, report=sys.stderr,
         timeout=args.timeout, downtime_ms=args.downtime_ms,
         disks=_json_list(args.mirror, "--mirror"))
    return 0


def _json_list(text: str | None, option: str) -> Any:
    import json
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{option} is not JSON: {exc}") from exc
    if not isinstance(value, list):
        raise ConfigError(f"{option} must be a JSON list")
    return value


def cmd_migrate_plan(args: argparse.Namespace) -> int:
    from vmanager.cli._output import emit_json
    from vmanager.lab.mirror import plan
    from vmanager.state.persist import attach, detach
    m = attach(args.machine, timeout=30)
    try:
        disks = plan(m)
    finally:
        detach(m)
    emit_json({"machine": args.machine, "disks": disks})
    return 0


def cmd_migrate_relay(args: argparse.Namespace) -> int:
    from vmanager.lab.relay import relay
    from vmanager.state.persist import run_dir_of
    out = os.dup(sys.stdout.fileno())
    # The stream is the relay's alone, and sshd sends the end of it only once the
    # session's stderr is closed too: nothing else is printed (the exit status says
    # whether the relay worked; the orchestrator discards its messages anyway).
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.dup2(null, sys.stderr.fileno())
    os.close(null)
    relay(run_dir_of(args.machine), args.listen or args.connect, listen=bool(args.listen),
          stdin=sys.stdin.fileno(), stdout=out, timeout=args.timeout)
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``migrate`` and the two commands a migration runs on servers."""
    p = sub.add_parser("migrate", parents=[common], help="move a lab machine to another "
                       "server, live", description="move a running lab machine to another "
                       "server of its lab, live (RAM and devices over SSH, disks mirrored "
                       "there over NBD inside SSH unless --shared-storage; the MAC and "
                       "addresses stay)")
    p.set_defaults(func=cmd_migrate)
    p.add_argument("file", help="the lab's TOML file")
    p.add_argument("machine")
    p.add_argument("--to", required=True, metavar="SERVER", help="the destination server")
    p.add_argument("--downtime-ms", type=int, default=100, metavar="MS",
                   help="the longest pause QEMU may plan for the last copy (default 100)")
    p.add_argument("--shared-storage", action="store_true",
                   help="the machine's disks are on storage both servers share at the same "
                   "path (default: the disks are mirrored to the destination and removed "
                   "from the source)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    p = sub.add_parser("migrate-receive", parents=[common], help="(run by 'migrate' on the "
                       "destination server) take a machine's state from stdin")
    p.set_defaults(func=cmd_migrate_receive)
    p.add_argument("lab")
    p.add_argument("machine")
    p.add_argument("--definition", required=True, metavar="JSON")
    p.add_argument("--mirror", metavar="JSON", help="the source's disks, to make here empty "
                   "and export for the source's block mirror")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    p = sub.add_parser("migrate-send", parents=[common], help="(run by 'migrate' on the "
                       "source server) send a machine's state to stdout")
    p.set_defaults(func=cmd_migrate_send)
    p.add_argument("machine")
    p.add_argument("--downtime-ms", type=int, default=100, metavar="MS")
    p.add_argument("--mirror", metavar="JSON", help="the disks to mirror first (the plan "
                   "the destination made them from)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    p = sub.add_parser("migrate-plan", parents=[common], help="(run by 'migrate' on the "
                       "source server) list a machine's writable disks and their sizes")
    p.set_defaults(func=cmd_migrate_plan)
    p.add_argument("machine")
    p = sub.add_parser("migrate-relay", parents=[common], help="(run by 'migrate' on both "
                       "servers) join a socket in a machine's run directory to stdin/stdout")
    p.set_defaults(func=cmd_migrate_relay)
    p.add_argument("machine")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--listen", metavar="NAME")
    way.add_argument("--connect", metavar="NAME")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
