"""Labels a kernel link carries, and what the host's default route goes through.

Public calls for the layers above (labs mark what they make with an interface
alias and refuse to take over a link whose alias is not theirs; a lab refuses a
trunk that carries the host's uplink), so they need no netlink of their own.
"""

from __future__ import annotations

import socket
from typing import Any

from vmanager.errors import NotFoundError
from vmanager.net._netlink import kernel_call, lookup, rtnl


def link_alias(ifname: str, netns: str | None = None) -> str | None:
    """The interface alias of ``ifname`` (in ``netns``): ``""`` if unset, ``None`` if absent.

    A missing namespace counts as an absent link.
    """
    try:
        with rtnl(netns) as ipr:
            index = lookup(ipr, ifname)
            if index is None:
                return None
            return str(ipr.link("get", index=index)[0].get_attr("IFLA_IFALIAS") or "")
    except NotFoundError:
        return None


def set_link_alias(ifname: str, alias: str, netns: str | None = None) -> bool:
    """Set the interface alias of ``ifname`` (in ``netns``); ``False`` if there is no such link.

    Raises:
        NetworkError: the kernel refused (named with the link and namespace).
    """
    with rtnl(netns) as ipr:
        index = lookup(ipr, ifname)
        if index is None:
            return False
        with kernel_call("label", ifname, netns):
            ipr.link("set", index=index, ifalias=alias)
    return True


def _uplink_indexes(ipr: Any) -> set[int]:
    """Interfaces that carry a default route, and the bridges/bonds above them."""
    found: set[int] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in ipr.get_default_routes(family=family):
            oif = route.get_attr("RTA_OIF")
            if oif:
                found.add(int(oif))
            for hop in route.get_attr("RTA_MULTIPATH") or []:
                found.add(int(hop["oif"]))
    for index in list(found):
        links = ipr.link("get", index=index)
        master = links[0].get_attr("IFLA_MASTER") if links else None
        if master:
            found.add(int(master))
    return found


def carries_default_route(ifname: str) -> bool | None:
    """Whether the host's default route goes out through ``ifname`` or a link enslaved to it.

    ``None`` when the host has no link ``ifname``.
    """
    with rtnl() as ipr:
        indexes = ipr.link_lookup(ifname=ifname)
        if not indexes:
            return None
        index = int(indexes[0])
        below = {int(m["index"]) for m in ipr.link("dump")
                 if m.get_attr("IFLA_MASTER") == index}
        return bool(({index} | below) & _uplink_indexes(ipr))
