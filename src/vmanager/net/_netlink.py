"""The one place that talks to pyroute2: sockets per namespace and error mapping.

Every request names its namespace; the calling thread never changes namespace:
a namespace's netlink socket is created by a short-lived helper thread that
entered it (:mod:`vmanager.net._nsthread`) and handed to pyroute2 by descriptor,
instead of pyroute2's own way, which forks a child per socket.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vmanager import validate
from vmanager.errors import ConfigError, NetworkError, NotFoundError
from vmanager.net._nsthread import netlink_socket
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


@contextmanager
def rtnl(netns: str | None = None) -> Iterator[Any]:
    """An ``IPRoute`` socket in ``netns`` (``None``: the caller's namespace).

    Raises:
        NotFoundError: the namespace does not exist.
        NetworkError: the socket could not be opened.
    """
    if netns is not None and not netns_exists(netns):
        raise NotFoundError(f"network namespace {netns!r} does not exist "
                            f"(no {netns_path(netns)})")
    try:
        # groups=0: no multicast events pile up on a socket used for requests only
        if netns is None:
            ipr = IPRoute(groups=0)
        else:
            sock = netlink_socket(netns_path(netns))
            try:
                ipr = IPRoute(fileno=sock.fileno(), groups=0)
            except BaseException:
                sock.close()
                raise
            sock.detach()  # the IPRoute owns the descriptor now
    except FileNotFoundError as exc:
        raise NotFoundError(f"network namespace {netns!r} does not exist "
                            f"(no {netns_path(str(netns))})") from exc
    except (NetlinkError, OSError, RuntimeError, TimeoutError) as exc:
        where = f"namespace {netns!r}" if netns else "the host namespace"
        raise NetworkError(f"cannot open a netlink socket in {where}: {exc}") from exc
    try:
        yield ipr
    finally:
        ipr.close()


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
    """Delete ``ifname`` if it (still) exists; a namespace already gone counts as done."""
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
