"""The CLI across servers: lab parts read from stdin, machine commands forwarded over SSH.

A machine command (``exec``, ``console``, ``screenshot``, ``stop``...) naming a
machine that is not on this host but that a lab placed on a server is run there
by the same ``vmanager`` argv over SSH, with this terminal's stdin, stdout and
stderr (``ssh -t`` when stdin is a terminal, for the interactive console);
its exit status is the command's. ``screenshot`` brings the image back here.
"""

from __future__ import annotations

import argparse
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


def read_lab(file: str, server: str | None) -> Any:
    """The lab of ``file`` (``-``: stdin), or only the part ``server`` makes."""
    from vmanager import lab as labs
    from vmanager.lab import servers as labservers
    lab = labs.parse(sys.stdin.read()) if file == "-" else labs.load(file)
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
