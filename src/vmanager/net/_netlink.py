"""The one place that talks to pyroute2: sockets per namespace and error mapping.

Every request names its namespace; the calling thread never changes namespace:
a namespace's netlink socket is created by a short-lived helper thread that
entered it (:mod:`vmanager.net._nsthread`) and handed to pyroute2 by descriptor,
instead of pyroute2's own way, which forks a child per socket.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWLINK

from vmanager import validate
from vmanager.errors import ConfigError, NetworkError, NotFoundError, VmanagerError
from vmanager.net import _pending
from vmanager.net._nsthread import Unsupported, netlink_socket, netlink_socket_and_sysfs
from vmanager.net.errors import LinkError

NETNS_DIR = "/run/netns"


def netns_path(name: str) -> str:
    """The bind mount that names namespace ``name`` (iproute2's convention)."""
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    """Whether ``/run/netns/NAME`` exists."""
    return os.path.exists(netns_path(name))


def check_netns_name(name: object) -> str:
    """Validate a namespace name (a safe identifier usable as a file name)."""
    return validate.name(name, what="namespace name")


class _HostSocket:
    """One thread's request socket in the host namespace, closed when the thread ends."""

    def __init__(self) -> None:
        # groups=0: no multicast events pile up on a socket used for requests only
        self.ipr = IPRoute(groups=0)
        self.pid = os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            self.ipr.close()


_local = threading.local()


@contextmanager
def _host_socket() -> Iterator[Any]:
    """The calling thread's host socket, opened once and reused (0.3 ms saved per use).

    A socket that saw anything but a kernel error (an interrupt mid-request could
    leave an unread reply behind) is dropped and the next use opens a new one.
    """
    holder: _HostSocket | None = getattr(_local, "host", None)
    if holder is None or holder.pid != os.getpid():
        try:
            holder = _HostSocket()
        except (NetlinkError, OSError, RuntimeError) as exc:
            raise NetworkError(f"cannot open a netlink socket in the host namespace: "
                               f"{exc}") from exc
        _local.host = holder
    try:
        yield holder.ipr
    except (NetlinkError, VmanagerError):
        raise
    except BaseException:
        _local.host = None
        raise


def _check_netns(netns: str) -> None:
    if not netns_exists(netns):
        raise NotFoundError(f"network namespace {netns!r} does not exist "
                            f"(no {netns_path(netns)})")


def _wrap(sock: Any) -> Any:
    """An ``IPRoute`` owning the netlink socket ``sock``."""
    try:
        ipr = IPRoute(fileno=sock.fileno(), groups=0)
    except BaseException:
        sock.close()
        raise
    sock.detach()  # the IPRoute owns the descriptor now
    return ipr


@contextmanager
def _opening(netns: str) -> Iterator[None]:
    """Map the errors of opening a socket in ``netns``."""
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFoundError(f"network namespace {netns!r} does not exist "
                            f"(no {netns_path(netns)})") from exc
    except (NetlinkError, OSError, RuntimeError, TimeoutError) as exc:
        raise NetworkError(f"cannot open a netlink socket in namespace {netns!r}: "
                           f"{exc}") from exc


@contextmanager
def rtnl(netns: str | None = None) -> Iterator[Any]:
    """An ``IPRoute`` socket in ``netns`` (``None``: the caller's namespace).

    The host namespace's socket is the calling thread's, kept open between
    uses; a namespace's is opened for the block and closed after it.

    Raises:
        NotFoundError: the namespace does not exist.
        NetworkError: the socket could not be opened.
    """
    if netns is None:
        with _host_socket() as host:
            yield host
        return
    _check_netns(netns)
    with _opening(netns):
        ipr = _wrap(netlink_socket(netns_path(netns)))
    try:
        yield ipr
    finally:
        ipr.close()


@contextmanager
def rtnl_and_sysfs(netns: str) -> Iterator[tuple[Any, int | None]]:
    """An ``IPRoute`` socket in ``netns`` and a sysfs of it (a directory descriptor).

    One helper thread makes both (see :func:`~vmanager.net._nsthread.netlink_socket_and_sysfs`);
    the sysfs is ``None`` where the kernel cannot make a detached one. Both are
    closed after the block: they hold the namespace alive.

    Raises:
        NotFoundError: the namespace does not exist.
        NetworkError: the socket could not be opened.
    """
    _check_netns(netns)
    sysfs: int | None
    with _opening(netns):
        try:
            sock, sysfs = netlink_socket_and_sysfs(netns_path(netns))
        except Unsupported:
            sock, sysfs = netlink_socket(netns_path(netns)), None
        try:
            ipr = _wrap(sock)
        except BaseException:
            if sysfs is not None:
                os.close(sysfs)
            raise
    try:
        yield ipr, sysfs
    finally:
        ipr.close()
        if sysfs is not None:
            os.close(sysfs)


#: RTM_NEWLINK that creates (never replaces) and asks for the new link back
_ADD_ECHO = (RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO)


def add_link(ipr: Any, **spec: Any) -> Any:
    """Create a link (``ipr.link("add", **spec)``) and return its message, or ``None``.

    The kernel echoes the new link's message (Linux 6.1 and later), which saves
    the lookup that would otherwise follow; older kernels send only the ack,
    and then this returns ``None``. Raises ``NetlinkError`` like ``link("add")``.
    """
    for msg in ipr.link(_ADD_ECHO, **spec):
        if (msg.get("header", {}).get("type") == RTM_NEWLINK
                and msg.get_attr("IFLA_IFNAME") == spec.get("ifname")):
            return msg
    return None


@contextmanager
def kernel_call(operation: str, ifname: str, netns: str | None) -> Iterator[None]:
    """Turn pyroute2/OS errors raised inside the block into :class:`LinkError`."""
    try:
        yield
    except NetlinkError as exc:
        detail = str(exc.args[1]) if len(exc.args) > 1 else ""
        raise LinkError(operation, ifname=ifname, netns=netns, errno=exc.code,
                        detail=detail) from exc
    except OSError as exc:
        raise LinkError(operation, ifname=ifname, netns=netns, errno=exc.errno,
                        detail=exc.strerror or str(exc)) from exc


def lookup(ipr: Any, ifname: str) -> int | None:
    """The ifindex of ``ifname`` in ``ipr``'s namespace, or ``None``."""
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def require(ipr: Any, ifname: str, netns: str | None, *, what: str = "interface") -> int:
    """The ifindex of ``ifname``; :class:`NotFoundError` naming it when absent."""
    index = lookup(ipr, ifname)
    if index is None:
        where = f" in namespace {netns!r}" if netns else ""
        raise NotFoundError(f"{what} {ifname!r} does not exist{where}")
    return index


def require_absent(ipr: Any, ifname: str, netns: str | None) -> None:
    """:class:`ConfigError` when ``ifname`` is taken already."""
    if lookup(ipr, ifname) is not None:
        where = f" in namespace {netns!r}" if netns else ""
        raise ConfigError(f"an interface named {ifname!r} already exists{where}")


def delete_link(ifname: str, netns: str | None) -> None:
    """Delete ``ifname`` if it (still) exists; a namespace already gone counts as done.

    Inside a removal batch (:func:`vmanager.net.batch_removal`) the delete is
    remembered and carried out, with the batch's others, when the batch ends.
    """
    pending = _pending.current()
    if pending is not None:
        pending.defer_link(ifname, netns)
        return
    if netns is not None and not netns_exists(netns):
        return
    with rtnl(netns) as ipr:
        try:
            ipr.link("del", ifname=ifname)  # by name: one request
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return
            raise LinkError("delete link", ifname=ifname, netns=netns, errno=exc.code) from exc


def set_up(ipr: Any, ifname: str, netns: str | None) -> None:
    """Bring ``ifname`` administratively up."""
    index = require(ipr, ifname, netns)
    with kernel_call("set up", ifname, netns):
        ipr.link("set", index=index, state="up")


def attr(msg: Any, name: str) -> Any:
    """An attribute of a netlink message, or ``None``."""
    return msg.get_attr(name)


def linkinfo_kind(msg: Any) -> str | None:
    """The ``IFLA_INFO_KIND`` of a link message (``"bridge"``, ``"veth"``...)."""
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None:
        return None
    kind = info.get_attr("IFLA_INFO_KIND")
    return str(kind) if kind is not None else None
