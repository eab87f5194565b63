"""Property-based bad input at every public boundary.

Whatever is thrown at a constructor or a call, the outcome is either success or
a VmanagerError with a message (never a dependency's traceback), and a refused
input creates nothing on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmanager import CD, Harddrive, Machine, Router, Switch, VirtualNic
from vmanager.errors import VmanagerError
from vmanager.screen import keys

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.one_of(st.text(max_size=24), st.text(alphabet="abc-_./ 0\x00é", max_size=20),
                  st.integers(), st.none(), st.binary(max_size=8))
sizes = st.one_of(st.text(max_size=10), st.integers(min_value=-2**70, max_value=2**70),
                  st.floats(allow_nan=True), st.none(), st.sampled_from(["1G", "0", "-5M", "1e9",
                                                                            "10 ZB", " 3 T "]))


def _host_objects() -> tuple[set[str], set[str]]:
    """Namespaces and links; on a shared host only names these tests can make."""
    try:
        ns = set(os.listdir("/run/netns"))
    except FileNotFoundError:
        ns = set()
    links = set(os.listdir("/sys/class/net"))
    if os.environ.get("VMANAGER_TEST_SHARED_HOST"):
        # Other test runs on the host make objects too; ours are named vn*/rtbad*
        # or after the (generated) input, which never starts with "vmb".
        ns = {n for n in ns if not n.startswith("vmb")}
        links = {n for n in links if not n.startswith("vmb")}
    return ns, links


@FAST
@given(name=names, memory=st.one_of(st.integers(), st.text(max_size=6)),
       cpus=st.one_of(st.integers(min_value=-3, max_value=300), st.text(max_size=3)))
def test_machine_definition(name: object, memory: object, cpus: object) -> None:
    try:
        Machine(name, memory=memory, cpus=cpus)  # type: ignore[arg-type]
    except VmanagerError as exc:
        assert str(exc)


@FAST
@given(name=names)
def test_switch_names_create_a_bridge_or_nothing(name: object) -> None:
    before = _host_objects()
    try:
        sw = Switch(name)  # type: ignore[arg-type]
    except VmanagerError as exc:
        assert str(exc)
        assert _host_objects() == before
        return
    sw.close()
    assert _host_objects() == before


@FAST
@given(name=st.one_of(st.none(), names), mac=st.one_of(st.none(), st.text(max_size=20)),
       mode=st.sampled_from(["macvtap", "tap", "bogus", ""]))
def test_virtual_nic_arguments(name: object, mac: object, mode: str) -> None:
    before = _host_objects()
    try:
        nic = VirtualNic(name, mac=mac, mode=mode, create=False)  # type: ignore[arg-type]
    except VmanagerError as exc:
        assert str(exc)
        assert _host_objects() == before
        return
    try:
        nic.create()
    except VmanagerError as exc:
        assert str(exc)
    finally:
        nic.close()
    assert _host_objects() == before


@FAST
@given(subnet=st.one_of(st.text(max_size=20), st.sampled_from(
    ["10.0.0.0/33", "300.1.1.0/24", "10.0.0.1/24", "fe80::/64", "10.0.0.0/31", ""])))
def test_router_subnets(subnet: str) -> None:
    before = _host_objects()
    try:
        Router("rtbad", trunk="nonexistent0", mode="nat", subnet=subnet,
               trunk_address="192.0.2.2/24")
    except VmanagerError as exc:
        assert str(exc)
    else:
        pytest.fail("a router on a trunk that does not exist was built")
    assert _host_objects() == before


@FAST
@given(size=sizes)
def test_disk_sizes(tmp_path_factory: pytest.TempPathFactory, size: object) -> None:
    path = tmp_path_factory.mktemp("d") / "d.qcow2"
    try:
        Harddrive(path).create(size)  # type: ignore[arg-type]
    except VmanagerError as exc:
        assert str(exc)
        assert not path.exists()


@FAST
@given(path=st.one_of(st.text(max_size=30), st.just("/etc/passwd\x00"), st.just("")))
def test_cd_and_disk_paths(path: str) -> None:
    for make in (CD, Harddrive):
        try:
            obj = make(path)
            if isinstance(obj, Harddrive):
                obj.info()
        except VmanagerError as exc:
            assert str(exc)


@FAST
@given(combo=st.text(max_size=30))
def test_key_names(combo: str) -> None:
    try:
        keys.parse_combo(combo)
    except VmanagerError as exc:
        assert "key" in str(exc)


def test_backing_file_outside_allowed_dirs_is_refused(tmp_path: Path) -> None:
    import subprocess
    outside = tmp_path / "outside"
    inside = tmp_path / "inside"
    outside.mkdir()
    inside.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(outside / "secret.qcow2"),
                    "1M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(outside / "secret.qcow2"), str(inside / "evil.qcow2")], check=True)
    with pytest.raises(VmanagerError, match=r"secret\.qcow2"):
        Harddrive(inside / "evil.qcow2").qemu_args(0)
