"""Run work inside another network namespace without ever leaving ours.

Each task runs in a fresh child process (``_nshelper.py``) that enters the
namespace with ``setns(2)`` and then execs a program, reads or writes a file,
or opens a tun device and sends its descriptor back over a socketpair.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmanager.errors import CommandError, HostError, NotFoundError
from vmanager.net._netlink import netns_exists, netns_path

HELPER = str(Path(__file__).with_name("_nshelper.py"))
_ENTER_FAILED = 111
_TASK_FAILED = 112


def in_netns(argv: Sequence[str], netns: str | None) -> list[str]:
    """The argv that runs ``argv`` inside ``netns`` (unchanged for ``None``)."""
    if netns is None:
        return list(argv)
    _require(netns)
    return [sys.executable, "-I", "-S", HELPER, netns_path(netns), "exec", *argv]


def _require(netns: str) -> None:
    if not netns_exists(netns):
        raise NotFoundError(f"network namespace {netns!r} does not exist")


def _run_helper(netns: str, args: Sequence[str], *, timeout: float,
                pass_fds: Sequence[int] = ()) -> bytes:
    _require(netns)
    argv = [sys.executable, "-I", "-S", HELPER, netns_path(netns), *args]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, pass_fds=tuple(pass_fds), check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"namespace helper timed out after {timeout} s", argv=argv,
                           returncode=None) from exc
    if proc.returncode != 0:
        raise CommandError(f"{args[0]} in namespace {netns!r} failed", argv=argv,
                           returncode=proc.returncode,
                           stderr=proc.stderr.decode(errors="replace"))
    return proc.stdout


def read_file(netns: str, path: str, *, sysfs: bool = False, timeout: float = 10.0) -> bytes:
    """Read ``path`` as seen from inside ``netns``.

    ``sysfs=True`` mounts a sysfs of that namespace first (in a private mount
    namespace of the child), so ``/sys/class/net`` shows the namespace's links.

    Raises:
        NotFoundError: the namespace does not exist.
        CommandError: the file could not be read (its stderr says why).
    """
    args = ["read", "--sysfs", path] if sysfs else ["read", path]
    return _run_helper(netns, args, timeout=timeout)


def write_file(netns: str, path: str, value: str, *, timeout: float = 10.0) -> None:
    """Write ``value`` to ``path`` from inside ``netns`` (``/proc/sys/net`` is per namespace)."""
    _run_helper(netns, ["write", path, value], timeout=timeout)


def tun_open(netns: str, ifname: str, flags: int, *, persist: bool = False,
             timeout: float = 10.0) -> int:
    """Attach to tun/tap ``ifname`` living in ``netns``; return the new fd (caller owns it).

    ``TUNSETIFF`` looks the device up in the namespace of whoever opened
    ``/dev/net/tun``, so the open happens in the helper and the fd travels back
    over a unix socketpair. ``persist=True`` creates the device (if missing) and
    makes it outlive the descriptor.

    Raises:
        CommandError: the helper could not attach (e.g. the device is busy).
        HostError: no descriptor came back.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        args = ["tun", str(theirs.fileno()), ifname, str(flags), "1" if persist else "0"]
        _run_helper(netns, args,
                    timeout=timeout, pass_fds=[theirs.fileno()])
        ours.settimeout(timeout)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 16, 1)
        except OSError as exc:
            raise HostError(f"no tap descriptor came back for {ifname!r}: {exc}") from exc
    if not fds:
        raise HostError(f"no tap descriptor came back for {ifname!r}")
    return fds[0]


def popen(argv: Sequence[str], *, netns: str | None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``netns``; the returned process *is* the program (exec)."""
    return subprocess.Popen(in_netns(argv, netns), **kwargs)
