"""Machines in a net Group: stopped with it, their NICs and namespaces removed in one pass."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pyroute2 import IPRoute

from vmanager import Machine
from vmanager.net import Group, Switch, list_namespaces
from vmtest_util import unique_name

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("machines with NICs need root (namespaces, macvtap)", allow_module_level=True)


def _exists(ifname: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def test_machines_of_a_group_are_torn_down_together(tiny: Any) -> None:
    names = [unique_name("g") for _ in range(2)]
    with Group() as group:
        sw = group.enter(Switch(unique_name("gs")))
        machines = [group.enter(Machine(n, nics=1, memory=128, **tiny.machine_args(n)))
                    for n in names]
        for m in machines:
            m.start_vm()
            sw.connect(m.nics[0])
        ports = [m.nics[0].port for m in machines]
        pids = [m.pid for m in machines]
        assert set(names) <= set(list_namespaces())
        assert all(_exists(p) for p in ports)
    # on return: QEMU gone, each machine's namespace and NIC gone, the switch gone
    assert all(not m.is_alive() for m in machines)
    assert all(pid is not None and not os.path.exists(f"/proc/{pid}") for pid in pids)
    assert not set(names) & set(list_namespaces())
    assert not any(_exists(p) for p in ports)
    assert not _exists(sw.name)
