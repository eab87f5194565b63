"""Namespace work from helper threads: the caller's namespace never changes, results
match what a process inside the namespace sees, and no process is started."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from vmanager.errors import NotFoundError
from vmanager.net import Namespace, VirtualNic, all_links
from vmanager.net._netlink import netns_path, rtnl
from vmanager.net._nsexec import read_file
from vmanager.net._nsthread import read_sysfs


def _netns_id() -> int:
    """The inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_namespace_made_in_process_is_a_new_namespace(name: Any) -> None:
    before = _netns_id()
    with Namespace(name("ns")) as ns:
        assert _netns_id() == before  # this thread stayed where it was
        assert os.stat(ns.path).st_ino != before
        assert set(all_links(netns=ns.name)) == {"lo"}
    assert not os.path.exists(netns_path(ns.name))


def test_socket_from_a_helper_thread_works_in_any_thread(netns: Any) -> None:
    ns = netns()
    before = _netns_id()
    with rtnl(ns) as ipr:
        names = {str(m.get_attr("IFLA_IFNAME")) for m in ipr.link("dump")}
    assert names == {"lo"} and _netns_id() == before
    seen: list[set[str]] = []

    def other() -> None:
        with rtnl(ns) as inner:
            seen.append({str(m.get_attr("IFLA_IFNAME")) for m in inner.link("dump")})

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert seen == [{"lo"}]


def test_missing_namespace_is_not_found() -> None:
    with pytest.raises(NotFoundError), rtnl("vmanager-no-such-netns"):
        pass


def test_macvtap_numbers_match_a_process_inside_the_namespace(name: Any, netns: Any) -> None:
    ns = netns()
    with VirtualNic(name("vn"), namespace=ns) as nic:
        assert nic.device_node is not None
        with rtnl(ns) as ipr:
            ifindex = ipr.link_lookup(ifname=nic.device)[0]
        rel = f"class/net/{nic.device}/macvtap/tap{ifindex}/dev"
        by_thread = read_sysfs(netns_path(ns), rel)
        by_process = read_file(ns, "/sys/" + rel, sysfs=True)
        assert by_thread == by_process
        major, minor = (int(x) for x in by_thread.decode().split(":"))
        assert os.stat(nic.device_node).st_rdev == os.makedev(major, minor)
