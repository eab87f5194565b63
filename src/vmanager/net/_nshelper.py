"""Run one small task inside a network namespace, in a process of its own.

This file is executed as a script (``python -I -S _nshelper.py ...``) by
:mod:`vmanager.net._nsexec`, never imported by the library: entering a namespace
changes the whole calling thread, so vmanager does it only in a child process.
It uses nothing but the standard library so that it starts fast.

Usage::

    _nshelper.py NSPATH exec ARGV...          setns, then exec ARGV (keeps the pid)
    _nshelper.py NSPATH read [--sysfs] FILE   print FILE's content to stdout
    _nshelper.py NSPATH write FILE VALUE      write VALUE into FILE (e.g. a sysctl)
    _nshelper.py NSPATH tun SOCKFD NAME FLAGS PERSIST
                                              open /dev/net/tun, TUNSETIFF (and
                                              TUNSETPERSIST when PERSIST is 1), send the fd

``--sysfs`` mounts a fresh sysfs in a private mount namespace first: sysfs shows
the network devices of the namespace that mounted it, so this is how another
namespace's ``/sys/class/net`` is read. Exit status 0 on success, 111 when the
namespace could not be entered, 112 when the task itself failed (message on stderr).
"""

import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB


def _fail(status: int, message: str) -> NoReturn:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(status)


def _libc_call(libc: ctypes.CDLL, name: str, *args: object) -> None:
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def main(argv: list[str]) -> int:
    nspath, op, rest = argv[1], argv[2], argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
        _libc_call(libc, "setns", fd, CLONE_NEWNET)
        os.close(fd)
    except OSError as exc:
        _fail(111, f"cannot enter network namespace {nspath}: {exc}")
    try:
        if op == "exec":
            try:
                os.execvp(rest[0], rest)  # noqa: S606 - argv list, no shell
            except OSError as exc:
                _fail(127 if exc.errno == errno.ENOENT else 126, f"{rest[0]}: {exc}")
        elif op == "read":
            if rest[0] == "--sysfs":
                _libc_call(libc, "unshare", CLONE_NEWNS)
                _libc_call(libc, "mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)
                _libc_call(libc, "mount", b"sysfs", b"/sys", b"sysfs", 0, None)
                rest = rest[1:]
            with open(rest[0], "rb") as f:
                sys.stdout.buffer.write(f.read())
        elif op == "write":
            with open(rest[0], "w") as f:
                f.write(rest[1])
        elif op == "tun":
            sock = socket.socket(fileno=int(rest[0]))
            tun = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            ifr = struct.pack("16sH22x", rest[1].encode(), int(rest[2]))
            fcntl.ioctl(tun, TUNSETIFF, ifr)
            if rest[3] == "1":
                fcntl.ioctl(tun, TUNSETPERSIST, 1)
            socket.send_fds(sock, [b"fd"], [tun])
        else:
            _fail(2, f"unknown operation {op!r}")
    except OSError as exc:
        _fail(112, f"{op} failed: {exc}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
