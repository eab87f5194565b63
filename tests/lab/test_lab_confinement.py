"""A lab file is not as powerful as root: paths stay in its directory, the uplink is refused.

No guest is booted: paths are checked when the file is read, and the trunk
check only reads the host's routes (the host's uplink is never touched).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from vmanager.errors import LabFileError, NetworkError
from vmanager.lab import _confine, spec

MACHINE = """
[lab]
name = "conf"
{extra}

[machines.m]
kernel = "{kernel}"
"""


def write(tmp_path: Path, kernel: str, extra: str = "") -> Path:
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir(exist_ok=True)
    path = lab_dir / "lab.toml"
    path.write_text(MACHINE.format(kernel=kernel, extra=extra))
    return path


@pytest.mark.parametrize("kernel", ["/etc/shadow", "../outside", "/dev/sda"])
def test_a_path_outside_the_labs_directory_is_refused(tmp_path: Path, kernel: str) -> None:
    with pytest.raises(LabFileError, match="outside the lab's directory") as err:
        spec.load(write(tmp_path, kernel))
    assert err.value.field == "machines.m.kernel"  # type: ignore[attr-defined]


def test_a_symlink_out_of_the_labs_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "vmlinuz")
    (path.parent / "vmlinuz").symlink_to("/etc/passwd")
    with pytest.raises(LabFileError, match="outside the lab's directory"):
        spec.load(path)


def test_disks_and_cds_are_confined_too(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    for body in ('disks = ["/var/lib/important.qcow2"]', 'cd = "/root/secret.iso"'):
        path = lab_dir / "lab.toml"
        path.write_text(f'[lab]\nname = "c"\n[machines.m]\n{body}\n')
        with pytest.raises(LabFileError, match="outside the lab's directory"):
            spec.load(path)


def test_files_in_the_labs_directory_and_opted_in_directories_are_fine(tmp_path: Path) -> None:
    assert spec.load(write(tmp_path, "vmlinuz")).machine("m").kernel == str(
        (tmp_path / "lab" / "vmlinuz").resolve())
    lab = spec.load(write(tmp_path, "/etc/hostname", 'allow_paths = ["/etc"]'))
    assert lab.machine("m").kernel == "/etc/hostname"
    assert spec.load(write(tmp_path, "/srv/x", 'allow_paths = ["/"]')).machine("m").kernel


def test_force_trunk_is_a_boolean_router_option() -> None:
    body = ('[lab]\nname = "r"\n[routers.gw]\nmode = "bridged"\ntrunk = "eth9"\n'
            "force_trunk = {}\n")
    assert spec.parse(body.format("true")).routers[0].force_trunk is True
    with pytest.raises(LabFileError, match="force_trunk"):
        spec.parse(body.format('"yes"'))


def _default_route_ifname() -> str | None:
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            oif = route.get_attr("RTA_OIF")
            if oif:
                return str(ipr.link("get", index=oif)[0].get_attr("IFLA_IFNAME"))
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="reads routes over netlink as root")
def test_a_trunk_carrying_the_default_route_is_refused() -> None:
    uplink = _default_route_ifname()
    if uplink is None:
        pytest.skip("this host has no IPv4 default route")
    with pytest.raises(NetworkError, match="default route"):
        _confine.check_trunk(uplink, "gw")
    _confine.check_trunk("lo", "gw")  # not the uplink: no objection
