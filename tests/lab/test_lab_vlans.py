"""VLANs of a lab file take effect: guests in VLAN 10 and 20 of one switch are apart.

This host's kernel lacks bridge VLAN filtering, so the switch enforces access
VLANs with its nftables table; a trunk port is refused with a clear error and
the failed ``up`` leaves nothing. Trunks through the same lab code path are
proven on a kernel that has the feature, inside the Python guest
(``tests/netkernel``, check ``lab_vlans``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from vmanager.lab import record as labrec
from vmcli import ok, vm

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)

LAB = """
[lab]
name = "{lab}"

[switches.{sw}]
vlan_filtering = true

[machines.{a}]
guest = "tiny"
memory = 256
nics = [{{ switch = "{sw}", vlan = 10 }}]

[machines.{b}]
guest = "tiny"
memory = 256
nics = [{{ switch = "{sw}", vlan = 10 }}]

[machines.{c}]
guest = "tiny"
memory = 256
nics = [{{ switch = "{sw}", vlan = 20 }}]
"""


def switch_tables() -> str:
    """The nftables bridge tables (a VLAN-aware switch's, on this kernel)."""
    from vmanager.net.host import sys_command
    return sys_command(["nft", "list", "tables", "bridge"], timeout=30).stdout


def names() -> dict[str, str]:
    t = secrets.token_hex(2)
    return {"lab": f"v{t}", "sw": f"vs{t}", "a": f"va{t}", "b": f"vb{t}", "c": f"vc{t}"}


def test_vlan_10_and_20_of_one_lab_switch_cannot_reach_each_other(tiny: Any,
                                                                  tmp_path: Path) -> None:
    n = names()
    path = tmp_path / "lab.toml"
    path.write_text(LAB.format(**n))
    try:
        ok("up", str(path), "--wait-ready", timeout=600)
        for i, m in enumerate(("a", "b", "c"), start=1):
            ok("exec", n[m], "--", f"ip link set eth0 up && ip addr add 10.66.0.{i}/24 dev eth0")
        ok("exec", n["a"], "--", "ping -c 2 -W 3 10.66.0.2")       # VLAN 10 <-> 10
        for src, dst in (("a", "10.66.0.3"), ("c", "10.66.0.1"), ("c", "10.66.0.2")):
            r = vm("exec", n[src], "--", f"ping -c 2 -W 2 {dst}")
            assert r.returncode != 0, f"{n[src]} reached {dst} across VLANs:\n{r.stdout}"
    finally:
        ok("down", str(path))
    assert labrec.load(n["lab"]) is None
    assert f"vmanager_sw_{n['sw']}\n" not in switch_tables()  # its VLAN rules went too


def test_a_trunk_on_a_kernel_without_bridge_vlan_filtering_is_refused_and_rolled_back(
        tiny: Any, tmp_path: Path) -> None:
    n = names()
    path = tmp_path / "lab.toml"
    path.write_text(LAB.format(**n).replace('vlan = 20 }', 'vlans = [10, 20] }'))
    r = vm("up", str(path))
    if r.returncode == 0:  # a kernel with bridge VLAN filtering: trunks work
        ok("down", str(path))
        pytest.skip("this kernel has bridge VLAN filtering; trunks are proven in-guest too")
    assert "trunk" in r.stderr and "CONFIG_BRIDGE_VLAN_FILTERING" in r.stderr, r.stderr
    assert labrec.load(n["lab"]) is None
    assert f"vmanager_sw_{n['sw']}\n" not in switch_tables()
