"""A lab takes over and removes only kernel objects that carry its own marker.

Objects a lab makes carry ``vmanager-lab:<lab>`` (a link's alias; a namespace's
``lo`` alias). Before, ``up`` deleted an existing namespace named like a lab
machine and a host link named like its NIC port, ``down`` removed whatever had
the recorded names, and cleaning up machine ``a`` removed the device nodes of
machine ``a.b``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from vmanager.lab import _owner
from vmanager.net import Namespace, Switch, VirtualNic, list_namespaces, stable_mac
from vmanager.net import adopt as _net
from vmcli import vm

pytestmark = [pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)


def test_cleaning_up_machine_a_leaves_the_device_nodes_of_machine_a_b() -> None:
    from vmanager.net.nic import _device_dir
    name = f"a{secrets.token_hex(2)}"
    mine, theirs = _device_dir() / f"{name}.vn01t", _device_dir() / f"{name}.b.vn02t"
    for node in (mine, theirs):
        node.write_bytes(b"")
    try:
        _net.remove_namespace(name)  # machine "a" (its namespace is gone already)
        assert not mine.exists()
        assert theirs.exists(), "machine a's cleanup removed a node of machine a.b"
    finally:
        theirs.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)


MACHINE_LAB = """
[lab]
name = "{lab}"

[switches.{sw}]

[machines.{m}]
guest = "tiny"
memory = 256
nics = [{{ switch = "{sw}" }}]
"""


@pytest.mark.guest
def test_up_refuses_a_namespace_named_like_a_lab_machine(tiny: object, tmp_path: Path) -> None:
    t = secrets.token_hex(2)
    n = {"lab": f"o{t}", "sw": f"os{t}", "m": f"om{t}"}
    path = tmp_path / "lab.toml"
    path.write_text(MACHINE_LAB.format(**n))
    with Namespace(n["m"]):  # somebody's namespace, same name
        r = vm("up", str(path))
        assert r.returncode != 0, r.stdout
        assert "refusing" in r.stderr and n["m"] in r.stderr, r.stderr
        assert n["m"] in list_namespaces(), "up removed a namespace it did not make"
    assert vm("down", str(path)).returncode == 0


@pytest.mark.guest
def test_up_refuses_a_host_link_named_like_a_lab_nic(tiny: object, tmp_path: Path) -> None:
    t = secrets.token_hex(2)
    n = {"lab": f"o{t}", "sw": f"os{t}", "m": f"om{t}"}
    path = tmp_path / "lab.toml"
    path.write_text(MACHINE_LAB.format(**n))
    port = VirtualNic(namespace=n["m"], mac=stable_mac(n["m"], 0), create=False).port
    with IPRoute() as ipr:
        ipr.link("add", ifname=port, kind="veth", peer=f"{port}x"[-15:])
    try:
        r = vm("up", str(path))
        assert r.returncode != 0, r.stdout
        assert "refusing" in r.stderr and port in r.stderr, r.stderr
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=port), "up removed a link it did not make"
    finally:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=port):
                ipr.link("del", index=index)
        vm("down", str(path))


def test_down_refuses_a_bridge_that_is_not_the_labs(tmp_path: Path) -> None:
    t = secrets.token_hex(2)
    lab, sw = f"o{t}", f"os{t}"
    path = tmp_path / "lab.toml"
    path.write_text(f'[lab]\nname = "{lab}"\n[switches.{sw}]\n')
    assert vm("up", str(path)).returncode == 0
    assert _owner.link_owner(sw) == lab
    # the lab's bridge is replaced by somebody else's of the same name
    _net.remove_link(sw)
    with Switch(sw):
        r = vm("down", str(path))
        assert r.returncode != 0 and "refusing" in r.stderr, r.stderr
        assert _net.link_exists(sw), "down removed a bridge the lab did not make"
    r = vm("down", str(path))  # the foreign bridge is gone: nothing of ours is left
    assert r.returncode == 0, r.stderr


def test_an_object_is_recorded_before_it_is_made(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Death right after a bridge is made (and marked): the rollback still finds it.

    Before, the record was written after the object was made, and the rollback
    skipped anything unrecorded.
    """
    from vmanager.lab import record as labrec
    from vmanager.lab import runner, spec
    t = secrets.token_hex(2)
    lab, sw = f"o{t}", f"os{t}"
    path = tmp_path / "lab.toml"
    path.write_text(f'[lab]\nname = "{lab}"\n[switches.{sw}]\n')
    real = _owner.mark_link

    def mark_then_die(lab_name: str, ifname: str, netns: str | None = None) -> None:
        real(lab_name, ifname, netns)
        raise KeyboardInterrupt  # the process is stopped between making and recording

    monkeypatch.setattr(_owner, "mark_link", mark_then_die)
    with pytest.raises(KeyboardInterrupt):
        runner.up(spec.load(path))
    assert not _net.link_exists(sw), "the bridge made before the interruption was left"
    assert labrec.load(lab) is None
