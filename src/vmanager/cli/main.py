"""``vmanager``: machines, networks and labs from the command line.

Every command takes ``--help``; most take ``--json`` for scripts. Machines
keep running after the command that started them exits; any later command
(from any process) attaches to them through their records.

Exit codes:

====  ==========================================================================
0     success
1     any other vmanager error
2     usage error (bad arguments)
3     not found: no such machine, lab, file or snapshot
4     wrong state: not running, already running, busy in another process
5     stale record: the machine's QEMU is gone or its pid was reused
6     invalid configuration or lab file (the message names file, line and field)
7     the host lacks something or refused (a binary, a permission)
8     the guest misbehaved (a timeout on its console or shell)
130   interrupted (Ctrl-C); 143 on SIGTERM, 129 on SIGHUP (both roll back like Ctrl-C)
====  ==========================================================================

``vmanager exec`` exits with the guest command's own status instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from vmanager import __version__, _signals
from vmanager.cli import export, images, labs, labtools, machines, remote
from vmanager.cli._output import Progress, emit_json, table
from vmanager.errors import (
    ConfigError,
    GuestError,
    HostError,
    NotFoundError,
    StateError,
    VmanagerError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_STATE = 4
EXIT_STALE = 5
EXIT_CONFIG = 6
EXIT_HOST = 7
EXIT_GUEST = 8
EXIT_INTERRUPTED = 130


def exit_code(exc: VmanagerError) -> int:
    """The documented exit code for an error."""
    from vmanager.lab.remote import RemoteError
    from vmanager.state import StaleRecordError
    if isinstance(exc, RemoteError):  # what the server's vmanager exited with
        return exc.exit_code
    if isinstance(exc, StaleRecordError):
        return EXIT_STALE
    for kind, code in ((NotFoundError, EXIT_NOT_FOUND), (StateError, EXIT_STATE),
                       (ConfigError, EXIT_CONFIG), (HostError, EXIT_HOST),
                       (GuestError, EXIT_GUEST)):
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR


def cmd_guest_build(args: argparse.Namespace) -> int:
    from vmanager.guests import tiny_guest
    progress = Progress(quiet=args.json or args.quiet)
    with progress.step("tiny guest"):
        guest = tiny_guest(rebuild=args.rebuild, progress=progress.callback())
    info = {"kernel": str(guest.kernel), "initrd": str(guest.initrd),
            "kernel_version": guest.kernel_version, "pvh": guest.pvh}
    if args.json:
        emit_json(info)
    else:
        table(["kernel_version", "kernel", "initrd"],
              [[guest.kernel_version, guest.kernel, guest.initrd]])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress or confirmations")
    parser = argparse.ArgumentParser(
        prog="vmanager", description="Build QEMU/KVM machines and the networks between "
        "them.", epilog="exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 wrong state, "
        "5 stale record, 6 invalid config/lab file, 7 host problem, 8 guest problem, "
        "130 interrupted; 'exec' returns the guest command's status.")
    parser.add_argument("--version", action="version", version=f"vmanager {__version__}")
    parser.add_argument("--json", action="store_true", default=False,
                        help="machine-readable output")
    parser.add_argument("-q", "--quiet", action="store_true", default=False,
                        help="no progress or confirmations")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    machines.add_parsers(sub, common)
    labs.add_parsers(sub, common)
    labtools.add_parsers(sub, common)
    images.add_parsers(sub, common)
    remote.add_parsers(sub, common)
    export.add_parsers(sub, common)
    guest = sub.add_parser("guest", help="the tiny test guest", description="the tiny test "
                           "guest: a Debian kernel and busybox, cached per user")
    gsub = guest.add_subparsers(dest="guest_command", metavar="ACTION", required=True)
    build = gsub.add_parser("build", help="build (or check) the tiny guest", parents=[common],
                            description="build the tiny guest from Debian packages, or check "
                            "the cached one")
    build.add_argument("--rebuild", action="store_true", help="resolve packages again")
    build.set_defaults(func=cmd_guest_build)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[
        min(args.verbose, 2)], format="%(levelname)s %(name)s: %(message)s")
    try:
        with _signals.installed():
            machines.exec_args_ok(args, argv)
            code: int | None = remote.forward(argv, args)  # a machine on a lab's server
            if code is None:
                code = args.func(args)
            return code
    except KeyboardInterrupt as exc:
        if isinstance(exc, _signals.Terminated) and exc.signum != signal.SIGINT:
            print(f"stopped by {exc}", file=sys.stderr)
            return 128 + exc.signum
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): end quietly, as other Unix tools do,
        # and keep Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except VmanagerError as exc:
        code = exit_code(exc)
        if args.json:
            emit_json({"error": str(exc), "type": type(exc).__name__, "exit_code": code},
                      sys.stderr)
        else:
            print(f"vmanager: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
