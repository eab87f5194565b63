"""Removing network objects together: one kernel clean-up pass instead of one per object.

Deleting a link waits for RCU grace periods (25-36 ms each, whoever asks). The
kernel is faster with many at once: every namespace whose last reference went
away is cleaned up in one pass (100 namespaces, each with a veth to the host
and a macvtap: about 0.2 s in all), and a request deleting a *group* of links
(``IFLA_GROUP``) waits for the grace periods once.

Inside :func:`batch_removal` the net layer's removals (``delete_link`` and a
namespace's removal) are collected; when the outermost block ends they are
carried out together:

1. the host-side ends of links into the namespaces being removed (veth peers)
   are looked up, while the namespaces still have their names;
2. every namespace is unmounted and unlinked (cheap: the kernel queues it);
3. the other links are deleted, per namespace, as one group;
4. the call waits until the host-side ends from step 1 are gone, which the
   kernel does in its clean-up pass.

So when the block ends nothing is left: no name, no host link.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vmanager.errors import NetworkError
from vmanager.net import _pending
from vmanager.net._netlink import delete_link, netns_exists, netns_path, rtnl
from vmanager.net._nsthread import remove_netns

log = logging.getLogger(__name__)

#: How long the end of a batch waits for the kernel's clean-up pass by default.
DEFAULT_TIMEOUT = 30.0
#: nsid the kernel reports for a namespace that has none in the asking namespace
_NO_NSID = (-1, 0xFFFFFFFF)
#: random link groups used for a group delete are drawn from here (group 0 is the default)
_GROUP_MIN, _GROUP_MAX = 0x4000_0000, 0x7FFF_FFFF


@contextmanager
def batch_removal(*, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Collect the removals of network objects closed in the block and do them together.

    Closing namespaces, NICs, switches, routers (or machines, which close
    theirs) inside the block only records what to remove; when the block ends,
    all of it is removed in one kernel clean-up pass and the call returns once
    it is gone. A block inside another joins the outer one.

    >>> with batch_removal():                 # doctest: +SKIP
    ...     for obj in reversed(objects):
    ...         obj.close()

    Raises:
        NetworkError: something could not be removed within ``timeout`` seconds
            (everything else was still removed). When the block itself raised,
            that exception propagates and removal failures are logged.
    """
    if _pending.current() is not None:
        yield
        return
    pending, token = _pending.open_batch()
    try:
        yield
    except BaseException:
        _pending.close_batch(token)
        failures = flush(pending, timeout=timeout)
        if failures:
            log.warning("removing a batch left something behind:\n%s", "\n".join(failures))
        raise
    _pending.close_batch(token)
    failures = flush(pending, timeout=timeout)
    if failures:
        raise NetworkError("removing network objects left something behind:\n"
                           + "\n".join(failures))


def flush(pending: _pending.Pending, *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Carry out ``pending``'s removals (see the module doc); what failed, in words."""
    if not pending.links and not pending.namespaces:
        return []
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    doomed = [n for n in dict.fromkeys(pending.namespaces) if netns_exists(n)]
    dying: dict[int, str] = {}
    if doomed:
        try:
            dying = _host_peers(doomed)
        except (NetworkError, NetlinkError, OSError) as exc:
            failures.append(f"looking up the host links of {', '.join(doomed)}: {exc}")
    for name in doomed:
        try:
            remove_netns(netns_path(name))
            log.info("removed network namespace %s", name)
        except OSError as exc:
            failures.append(f"namespace {name}: cannot remove it: {exc}")
    # Links inside a removed namespace go with it, and so do host links into it.
    gone_with = set(dying.values())
    removed = set(pending.namespaces)
    by_ns: dict[str | None, list[str]] = {}
    for ifname, netns in dict.fromkeys(pending.links):
        if netns in removed or (netns is None and ifname in gone_with):
            continue
        by_ns.setdefault(netns, []).append(ifname)
    for netns, names in by_ns.items():
        try:
            _delete_links(names, netns)
        except NetworkError as exc:
            failures.append(str(exc))
    if dying:
        failures.extend(_wait_gone(dying, deadline))
    return failures


def _host_peers(names: list[str]) -> dict[int, str]:
    """Host links (index -> name) that the kernel removes with namespaces ``names``.

    A veth end or a link stacked on a device in another namespace carries
    ``IFLA_LINK_NETNSID``: that namespace's id as the host sees it.
    """
    with rtnl() as host:
        nsids = set()
        for name in names:
            try:
                fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                nsid = host.get_netnsid(fd=fd).get("nsid")
            finally:
                os.close(fd)
            if nsid is not None and nsid not in _NO_NSID:
                nsids.add(int(nsid))
        if not nsids:
            return {}
        return {int(m["index"]): str(m.get_attr("IFLA_IFNAME"))
                for m in host.link("dump") if m.get_attr("IFLA_LINK_NETNSID") in nsids}


def _delete_links(names: list[str], netns: str | None) -> None:
    """Delete links ``names`` of one namespace; several as one group (one wait)."""
    if netns is not None and not netns_exists(netns):
        return
    if len(names) == 1:
        delete_link(names[0], netns)
        return
    group = _GROUP_MIN + secrets.randbelow(_GROUP_MAX - _GROUP_MIN)
    marked: list[str] = []
    with rtnl(netns) as ipr:
        for name in names:
            try:
                ipr.link("set", ifname=name, group=group)
                marked.append(name)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise _failed(name, netns, exc) from exc
        members = {m.get_attr("IFLA_IFNAME") for m in ipr.link("dump")
                   if m.get_attr("IFLA_GROUP") == group}
    if not marked:
        return
    if members != set(marked):
        # something else sits in that (random) group: never delete it with ours
        log.warning("link group %d holds links that are not ours (%s); deleting ours "
                    "one by one", group, ", ".join(sorted(str(m) for m in members - set(marked))))
        for name in marked:
            delete_link(name, netns)
        return
    with rtnl(netns) as ipr:
        try:
            ipr.link("del", group=group)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise _failed(", ".join(marked), netns, exc) from exc
    log.debug("deleted %s as one group", ", ".join(marked))


def _failed(what: str, netns: str | None, exc: NetlinkError) -> NetworkError:
    where = f" in namespace {netns!r}" if netns else ""
    return NetworkError(f"cannot delete {what}{where}: {os.strerror(exc.code)}")


def _still_there(host: Any, index: int, name: str) -> bool:
    try:
        msg = host.link("get", index=index)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise
    return bool(msg.get_attr("IFLA_IFNAME") == name)


def _wait_gone(links: dict[int, str], deadline: float) -> list[str]:
    """Wait until none of the host links ``links`` (index -> name) exists any more.

    The kernel removes a batch of namespaces in one pass, so the links tend to
    go all at once: each round asks for them one by one and stops at the first
    that is still there (asking for a gone one is cheap; a dump of all links,
    with many still there, is not).
    """
    left = dict(links)
    delay = 0.005
    while True:
        with rtnl() as host:
            for index, name in list(left.items()):
                if _still_there(host, index, name):
                    break
                del left[index]
        if not left:
            return []
        if time.monotonic() >= deadline:
            return [f"host links {', '.join(sorted(left.values()))} are still there; their "
                    "namespace is held by something (a process or open descriptor inside?)"]
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
