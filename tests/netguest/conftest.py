"""Fixtures for networking tests with real guests.

Booting a tiny guest costs seconds of TCG, so one pair of machines on one
Switch is shared by the whole module (:func:`lab`); each test plugs in what it
needs (hot-plugged NICs, routers, an "outside" namespace) and removes it again.
On top of the suite-wide leak check this fails a test that leaves an nftables
table or one of this session's links or namespaces behind.

Traffic rule: only loopback and addresses inside namespaces made here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from _guestnet import Lab, name, ours

from vmanager import Machine
from vmanager.guests import TinyGuest
from vmanager.net import Namespace, Switch

if os.geteuid() != 0:
    pytest.skip("the guest networking tests need root (netlink, namespaces)",
                allow_module_level=True)


@pytest.fixture(autouse=True)
def no_net_leaks() -> Iterator[None]:
    """Fail a test that leaves one of this session's links, namespaces or nft tables."""
    before = ours()
    yield
    leaked = ours() - before
    if leaked:
        pytest.fail(f"test leaked: {sorted(leaked)}")


@pytest.fixture(scope="module")
def lab(tiny: TinyGuest) -> Iterator[Lab]:
    """Boot the pair once per module (both at once: the boots overlap)."""
    before = ours()
    with Switch(name("sw")) as sw:
        a = Machine(name("a"), nics=1, memory=256, **tiny.machine_args("a"))
        b = Machine(name("b"), nics=1, memory=256, **tiny.machine_args("b"))
        try:
            lab = Lab(a, b, sw)
            for m in (a, b):
                m.start_vm()
                sw.connect(m.nics[0])
            for m, ip in ((a, lab.a_ip), (b, lab.b_ip)):
                m.wait_ready(120)
                m.succeed(f"ip addr add {ip}/24 dev eth0 && ip link set eth0 up")
            yield lab
        finally:
            a.kill()
            b.kill()
    leaked = ours() - before
    assert not leaked, f"the shared lab leaked: {sorted(leaked)}"


@pytest.fixture
def outside() -> Iterator[str]:
    """A namespace standing for the world beyond a router's trunk."""
    with Namespace(name("o")) as ns:
        yield ns.name
