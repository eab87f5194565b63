"""Removing many objects together: batch_removal, teardown, Group.

Every test checks the kernel right after the call returns: the point of a batch
is that it is faster *and* still leaves nothing behind when it returns.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from _nettools import veth_into
from pyroute2 import IPRoute

from vmanager.errors import ConfigError, NetworkError, StateError
from vmanager.net import (
    Group,
    Lifecycle,
    Namespace,
    Switch,
    VirtualNic,
    _batch,
    batch_removal,
    list_namespaces,
    teardown,
)


def _exists(ifname: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def _master(ifname: str) -> int | None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return ipr.link("get", index=found[0])[0].get_attr("IFLA_MASTER") if found else None


def test_teardown_removes_everything_before_returning(name: Any) -> None:
    sw = Switch(name("sw"))
    made: list[Any] = [sw]
    for _ in range(5):
        ns = Namespace(name("ns"))
        nic = VirtualNic(name("p"), namespace=ns)
        sw.connect(nic)
        made += [ns, nic]
    nodes = [o.device_node for o in made if isinstance(o, VirtualNic)]
    assert all(n is not None and n.exists() for n in nodes)
    teardown(reversed(made))
    # right after the call: no namespace, no host port, no bridge, no device node
    assert not {o.name for o in made if isinstance(o, Namespace)} & set(list_namespaces())
    for obj in made:
        if isinstance(obj, VirtualNic):
            assert not _exists(obj.port), obj.port
    assert not _exists(sw.name)
    assert not any(n is not None and n.exists() for n in nodes)
    assert all(o.state is Lifecycle.CLOSED for o in made)
    teardown(made)  # closing again does nothing


def test_namespace_close_waits_for_links_into_it(name: Any) -> None:
    """A veth that vmanager did not make, into a namespace it removes: gone on return.

    The kernel deletes it in its clean-up pass after the namespace is removed,
    tens of milliseconds later; close() waits for that.
    """
    ns = Namespace(name("ns"))
    host_end = name("v")
    veth_into(host_end, ns.name)
    assert _exists(host_end)
    ns.close()
    assert not _exists(host_end)
    assert ns.name not in list_namespaces()


def test_removals_in_a_batch_happen_when_it_ends(name: Any) -> None:
    sw = Switch(name("sw"))
    ns = Namespace(name("ns"))
    nic = VirtualNic(name("p"), namespace=ns)
    sw.connect(nic)
    with batch_removal():
        nic.close()
        ns.close()
        sw.close()
        # closed, but the kernel objects are still there until the batch ends
        assert nic.state is ns.state is sw.state is Lifecycle.CLOSED
        assert ns.exists and _exists(nic.port) and _exists(sw.name)
        with batch_removal():  # an inner block joins the outer one
            pass
        assert ns.exists
    assert not ns.exists and not _exists(nic.port) and not _exists(sw.name)


def test_batch_is_carried_out_when_the_block_raises(name: Any) -> None:
    ns = Namespace(name("ns"))
    with pytest.raises(RuntimeError, match="boom"), batch_removal():
        ns.close()
        raise RuntimeError("boom")
    assert not ns.exists


def test_batches_are_per_thread(name: Any) -> None:
    """A batch open in one thread does not capture another thread's removals."""
    other = Namespace(name("ns"))
    with batch_removal():
        worker = threading.Thread(target=other.close)
        worker.start()
        worker.join()
        assert not other.exists  # removed at once, by the other thread


def test_several_host_links_go_as_one_group(name: Any) -> None:
    switches = [Switch(name("sw")) for _ in range(3)]
    teardown(switches)
    assert not any(_exists(sw.name) for sw in switches)


def test_group_delete_spares_links_that_are_not_ours(name: Any, monkeypatch: Any) -> None:
    """Another link already in the (random) group is not deleted with ours."""
    group = 0x5EED_1234
    monkeypatch.setattr(_batch.secrets, "randbelow", lambda _n: group - _batch._GROUP_MIN)
    foreign = name("f")
    with IPRoute() as ipr:
        ipr.link("add", ifname=foreign, kind="bridge", group=group)
    try:
        switches = [Switch(name("sw")) for _ in range(2)]
        teardown(switches)
        assert not any(_exists(sw.name) for sw in switches)
        assert _exists(foreign)
    finally:
        with IPRoute() as ipr:
            ipr.link("del", ifname=foreign)


def test_group_creates_in_parallel_and_tears_down_in_one_pass(name: Any) -> None:
    with Group(workers=3) as group:
        sw = group.enter(Switch(name("sw")))
        nss = group.create_all(Namespace(name("ns"), create=False) for _ in range(6))
        nics = group.create_all(VirtualNic(name("p"), namespace=ns, create=False)
                                for ns in nss)
        for nic in nics:
            sw.connect(nic)
        assert all(ns.exists for ns in nss)
        assert all(_master(nic.port) for nic in nics)
        # each NIC's device node is the macvtap in its own namespace
        assert all(nic.device_node is not None and nic.device_node.exists() for nic in nics)
        fd = nics[0].open_fd()
        os.close(fd)
        assert len(group.members) == 13
    assert not any(ns.exists for ns in nss)
    assert not any(_exists(nic.port) for nic in nics) and not _exists(sw.name)
    with pytest.raises(StateError):
        group.enter(Namespace(name("ns"), create=False))


def test_create_all_keeps_what_it_made_when_one_fails(name: Any) -> None:
    taken = Namespace(name("ns"))
    try:
        group = Group()
        fresh = [Namespace(name("ns"), create=False) for _ in range(3)]
        with pytest.raises(ConfigError, match="already exists"), group:
            group.create_all([fresh[0], Namespace(taken.name, create=False), fresh[1],
                              fresh[2]])
        # the others were made, then removed when the group closed; the existing one stays
        assert all(ns.state is Lifecycle.CLOSED and not ns.exists for ns in fresh)
        assert taken.exists
    finally:
        taken.close()


def test_teardown_goes_on_after_a_failure(name: Any) -> None:
    class Broken:
        def close(self) -> None:
            raise NetworkError("cannot")

    ns = Namespace(name("ns"))
    with pytest.raises(NetworkError, match="cannot"):
        teardown([Broken(), ns])
    assert not ns.exists


def test_teardown_refuses_objects_it_cannot_close(name: Any) -> None:
    ns = Namespace(name("ns"))
    with pytest.raises(ConfigError, match="neither"):
        teardown([object(), ns])
    assert not ns.exists


def test_bad_worker_counts_are_refused() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="workers"):
            Group(workers=bad)  # type: ignore[arg-type]
