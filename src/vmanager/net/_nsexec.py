"""Run work inside another network namespace without ever leaving ours.

Programs run in a fresh child process (``_nshelper.py``) that enters the
namespace with ``setns(2)`` and then execs them; files are read or written the
same way. A tun device is opened by a helper thread instead (no process).
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmanager import hostcmd
from vmanager.errors import HostError, NotFoundError
from vmanager.net._netlink import netns_exists, netns_path
from vmanager.net._nsthread import open_tun

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
#: a tap as QEMU expects it: no packet info, a virtio-net header
TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR

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
    proc = hostcmd.run(argv, text=False, timeout=timeout, pass_fds=pass_fds,
                       what=f"{args[0]} in namespace {netns!r} (namespace helper)")
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
    ``/dev/net/tun``, so the open happens in a helper thread inside ``netns``
    (:func:`vmanager.net._nsthread.open_tun`); the ioctls then work from here.
    ``persist=True`` creates the device (if missing) and makes it outlive the
    descriptor.

    Raises:
        NotFoundError: the namespace does not exist.
        HostError: the device could not be opened or attached (e.g. it is busy).
    """
    _require(netns)
    try:
        fd = open_tun(netns_path(netns), timeout=timeout)
    except OSError as exc:
        raise HostError(f"cannot open /dev/net/tun in namespace {netns!r}: {exc}") from exc
    return _attach(fd, ifname, flags, persist, where=f" in namespace {netns!r}")


def tun_open_here(ifname: str, flags: int, *, persist: bool = False) -> int:
    """:func:`tun_open` in the caller's own namespace (no namespace switch is involved)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise HostError(f"cannot open /dev/net/tun: {exc}") from exc
    return _attach(fd, ifname, flags, persist, where="")


def _attach(fd: int, ifname: str, flags: int, persist: bool, *, where: str) -> int:
    """TUNSETIFF (and TUNSETPERSIST) on ``fd``; the fd is closed if that fails."""
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), flags))
        if persist:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        os.close(fd)
        raise HostError(f"cannot create or attach to tap {ifname!r}{where}: "
                        f"{exc.strerror}") from exc
    return fd


def popen(argv: Sequence[str], *, netns: str | None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``netns``; the returned process *is* the program (exec)."""
    return subprocess.Popen(in_netns(argv, netns), **kwargs)
