"""Work inside another network namespace from a short-lived helper thread.

``setns(2)`` and ``unshare(CLONE_NEWNET)`` change the namespace of the calling
*thread* only. Each task here runs in a thread started for it alone: the thread
enters the namespace, does one small thing and exits, so no thread that runs
anything else ever changes namespace (the rule of :mod:`vmanager.net`). What the
task makes keeps its namespace after the thread is gone and works from any
thread:

* a socket belongs to the namespace it was created in (netlink sockets for
  pyroute2, see :func:`netlink_socket`);
* ``/dev/net/tun`` is bound to the namespace of whoever opened it
  (:func:`open_tun`);
* a sysfs shows the network devices of the namespace that created it; made
  with ``fsopen``/``fsmount`` it is a *detached* mount reachable only through a
  file descriptor, so no mount namespace is touched (:func:`read_sysfs`);
* a namespace made by ``unshare`` lives on once bind-mounted on
  ``/run/netns/NAME`` (:func:`create_netns`, what ``ip netns add`` does).

This replaces a forked process per task (pyroute2's ``IPRoute(netns=)`` and
``netns.create`` fork; vmanager's ``_nshelper.py`` spawns a Python), which cost
5-30 ms each; a thread costs about 0.1 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
NETLINK_ROUTE = 0
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_CMD_CREATE = 6
#: fsopen/fsconfig/fsmount (Linux 5.2) have the same numbers on every architecture
#: that uses the common syscall table; elsewhere :func:`read_sysfs` is unavailable.
_FS_SYSCALLS = {"x86_64": (430, 431, 432), "aarch64": (430, 431, 432),
                "riscv64": (430, 431, 432), "ppc64le": (430, 431, 432),
                "s390x": (430, 431, 432), "armv7l": (430, 431, 432), "i686": (430, 431, 432)}
DEFAULT_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)
_shared_rundirs: set[str] = set()
_rundir_lock = threading.Lock()


class Unsupported(OSError):
    """The kernel or architecture lacks what a task needs (callers fall back)."""


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _in_thread(task: Callable[[], T], *, timeout: float) -> T:
    """Run ``task`` in a new thread and return its result (or raise its exception)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(task())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="vmanager-netns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(errno.ETIMEDOUT, f"a namespace helper thread did not finish "
                                            f"within {timeout} s")
    if failure:
        raise failure[0]
    return result[0]


def _enter(nspath: str) -> None:
    """setns() the *current thread* into the network namespace at ``nspath``."""
    fd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {nspath}")
    finally:
        os.close(fd)


def run_in_netns(nspath: str, task: Callable[[], T], *,
                 timeout: float = DEFAULT_TIMEOUT) -> T:
    """Run ``task`` in a fresh thread that first enters the namespace at ``nspath``.

    The thread exits when ``task`` returns; the caller's thread never changes
    namespace. Raises what ``task`` or ``setns`` raised (``OSError``), or
    ``TimeoutError`` after ``timeout`` seconds.
    """
    def entered() -> T:
        _enter(nspath)
        return task()
    return _in_thread(entered, timeout=timeout)


def netlink_socket(nspath: str, proto: int = NETLINK_ROUTE, *,
                   timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """A netlink socket (unbound) living in the namespace at ``nspath``."""
    return run_in_netns(
        nspath, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto),
        timeout=timeout)


def netlink_socket_and_sysfs(nspath: str, *, timeout: float = DEFAULT_TIMEOUT
                             ) -> tuple[socket.socket, int]:
    """A netlink socket and a detached sysfs (see :func:`with_sysfs`) of the
    namespace at ``nspath``, both made by one helper thread.

    The caller closes both; while either is open the namespace stays alive.

    Raises:
        Unsupported: no ``fsopen`` here (nothing is left open).
        OSError: the kernel refused.
    """
    def make() -> tuple[socket.socket, int]:
        sysfs = _detached_sysfs()
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE), sysfs
        except BaseException:
            os.close(sysfs)
            raise
    return run_in_netns(nspath, make, timeout=timeout)


def open_tun(nspath: str, *, timeout: float = DEFAULT_TIMEOUT) -> int:
    """``/dev/net/tun`` opened in the namespace at ``nspath`` (``TUNSETIFF`` looks there)."""
    return run_in_netns(nspath, lambda: os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC),
                        timeout=timeout)


def _fs_syscalls() -> tuple[int, int, int]:
    numbers = _FS_SYSCALLS.get(platform.machine())
    if numbers is None:
        raise Unsupported(errno.ENOSYS, f"fsopen() numbers unknown on {platform.machine()}")
    return numbers


def _detached_sysfs() -> int:
    """A detached sysfs mount of the current thread's network namespace (an fd)."""
    fsopen, fsconfig, fsmount = _fs_syscalls()
    ctx = _libc.syscall(fsopen, b"sysfs", FSOPEN_CLOEXEC)
    if ctx < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM, errno.ENODEV):
            raise Unsupported(err, f"fsopen(sysfs): {os.strerror(err)}")
        raise OSError(err, f"fsopen(sysfs): {os.strerror(err)}")
    try:
        _check(_libc.syscall(fsconfig, ctx, FSCONFIG_CMD_CREATE, None, None, 0),
               "fsconfig(sysfs)")
        return _check(_libc.syscall(fsmount, ctx, FSMOUNT_CLOEXEC, 0), "fsmount(sysfs)")
    finally:
        os.close(ctx)


def with_sysfs(nspath: str, task: Callable[[int], T], *,
               timeout: float = DEFAULT_TIMEOUT) -> T:
    """``task(fd)`` with ``fd`` a sysfs of the namespace at ``nspath``: paths
    relative to it (``os.open(..., dir_fd=fd)``) are ``/sys`` as that namespace sees it.

    The sysfs is created in the namespace by the helper thread and mounted
    nowhere (so no mount namespace is touched); its descriptor is closed when
    ``task`` returns.

    Raises:
        Unsupported: no ``fsopen`` here (the caller falls back to a helper process).
        OSError: whatever ``task`` raised, or the kernel refused.
    """
    def run() -> T:
        mount = _detached_sysfs()
        try:
            return task(mount)
        finally:
            os.close(mount)
    return run_in_netns(nspath, run, timeout=timeout)


def read_at(dir_fd: int, relpath: str) -> bytes:
    """The content of a small file ``relpath`` under the directory ``dir_fd``."""
    fd = os.open(relpath, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def read_sysfs(nspath: str, relpath: str, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Read ``/sys/<relpath>`` as the namespace at ``nspath`` sees it (see :func:`with_sysfs`)."""
    return with_sysfs(nspath, lambda fd: read_at(fd, relpath), timeout=timeout)


def _share_rundir(rundir: str) -> None:
    """Make ``rundir`` a shared mount (as iproute2 does) so namespaces mounted there
    propagate to mount namespaces created later; bind it onto itself first if needed."""
    os.makedirs(rundir, mode=0o755, exist_ok=True)
    if _libc.mount(b"", rundir.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"make {rundir} shared")
    _check(_libc.mount(rundir.encode(), rundir.encode(), b"none", MS_BIND | MS_REC, None),
           f"bind {rundir}")
    _check(_libc.mount(b"", rundir.encode(), b"none", MS_SHARED | MS_REC, None),
           f"make {rundir} shared")


def create_netns(nspath: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Create a network namespace and bind-mount it on ``nspath`` (``ip netns add``).

    A helper thread unshares its network namespace and bind-mounts
    ``/proc/thread-self/ns/net`` onto ``nspath``; the mount keeps the namespace
    alive after the thread exits. On failure nothing is left behind.

    Raises:
        FileExistsError: ``nspath`` exists.
        OSError: the kernel refused.
    """
    rundir = os.path.dirname(nspath)
    with _rundir_lock:
        # once per process: with many namespaces mounted, MS_REC walks them all
        if rundir not in _shared_rundirs or not os.path.isdir(rundir):
            _share_rundir(rundir)
            _shared_rundirs.add(rundir)

    def make() -> None:
        os.close(os.open(nspath, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            _check(_libc.mount(b"/proc/thread-self/ns/net", nspath.encode(), b"none",
                               MS_BIND, None), f"bind-mount {nspath}")
        except BaseException:
            os.unlink(nspath)
            raise
    _in_thread(make, timeout=timeout)


MNT_DETACH = 2


def remove_netns(nspath: str) -> None:
    """Unmount and unlink a named namespace (``ip netns del``); gone already is fine.

    The kernel deletes the namespace (and every link in it) once nothing else
    holds it. Raises :class:`OSError` when the kernel refuses.
    """
    if _libc.umount2(nspath.encode(), MNT_DETACH) < 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise OSError(err, f"umount {nspath}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(nspath)
