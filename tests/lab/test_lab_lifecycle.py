"""Lab up -> inspect -> up again -> down leaves nothing; a failing up rolls back.

Traffic stays inside namespaces the lab makes (its "outside" host is one).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from vmanager.lab import record as labrec
from vmanager.net import list_namespaces
from vmanager.state import records
from vmcli import ok, vm

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)

DHCP = ("ip link set eth0 up && udhcpc -i eth0 -q -n -t 5 -T 1 "
        "-s /usr/share/udhcpc/default.script")


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def mine(names: set[str], n: dict[str, str]) -> set[str]:
    """Of ``names``, those this test's lab made (other tests may run alongside).

    A lab machine's NIC port is named after its stable MAC (``vn`` + the MAC's last
    four bytes), so it is told apart from other tests' NICs exactly.
    """
    from vmanager.net import stable_mac
    tag = n["lab"][1:]
    ports = {"vn" + stable_mac(n["m"], i).replace(":", "")[4:] for i in range(4)}
    return {x for x in names if tag in x or x in ports}


def lab_file(tmp_path: Path, body: str) -> tuple[str, Path, dict[str, str]]:
    t = secrets.token_hex(2)
    names = {"lab": f"l{t}", "out": f"o{t}", "up": f"u{t}", "sw": f"s{t}", "gw": f"g{t}",
             "m": f"m{t}"}
    path = tmp_path / "lab.toml"
    path.write_text(body.format(**names))
    return names["lab"], path, names


NAT_LAB = """
[lab]
name = "{lab}"

[hosts.{out}]
port = "{up}"
address = "198.51.100.1/24"

[switches.{sw}]

[routers.{gw}]
trunk = "{out}"
subnet = "10.81.0.0/24"
trunk_address = "198.51.100.2/24"
gateway = "198.51.100.1"
switch = "{sw}"

[machines.{m}]
guest = "tiny"
memory = 192
nics = [{{ switch = "{sw}" }}]
"""


def test_up_inspect_idempotent_up_down_leaves_nothing(tiny: Any, tmp_path: Path) -> None:
    lab, path, n = lab_file(tmp_path, NAT_LAB)
    links_before, ns_before = links(), set(list_namespaces())
    try:
        made = json.loads(ok("--json", "up", str(path), "--wait-ready"))["made"]
        assert len(made) == 4
        info = json.loads(ok("--json", "inspect", str(path)))
        assert info["up"] and info["machines"][0]["state"] == "running"
        assert info["routers"][0]["state"] == "up" and info["hosts"][0]["state"] == "up"
        assert {n["gw"], n["out"], n["m"]} <= set(list_namespaces())

        # inside the guest: a DHCP lease from the router, and the outside answers
        ok("exec", n["m"], "--", DHCP)
        ok("exec", n["m"], "--", "ping -c 1 -W 3 198.51.100.1")
        info = json.loads(ok("--json", "inspect", str(path)))
        assert info["machines"][0]["nics"][0]["address"].startswith("10.81.0.")

        # up again: nothing made, the same QEMU still runs
        pid = info["machines"][0]["pid"]
        again = json.loads(ok("--json", "up", str(path)))
        assert again["made"] == [] and len(again["kept"]) == 4
        assert json.loads(ok("--json", "inspect", str(path)))["machines"][0]["pid"] == pid

        # a stopped lab machine starts again from its record, on its switch
        ok("stop", n["m"])
        ok("start", n["m"], "--wait-ready")
        ok("exec", n["m"], "--", DHCP)
    finally:
        removed = json.loads(ok("--json", "down", str(path)))["removed"]
    assert len(removed) == 4
    assert labrec.load(lab) is None and records.find(n["m"]) is None
    assert mine(links() - links_before, n) == set()
    assert mine(set(list_namespaces()) - ns_before, n) == set()
    assert "is not up" in ok("down", str(path))  # down twice: nothing to do


def test_a_failing_up_rolls_back_what_it_made(tiny: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-kernel"
    bogus.write_text("this is not a kernel\n")
    lab, path, n = lab_file(tmp_path, """
[lab]
name = "{lab}"

[switches.{sw}]

[machines.{m}]
kernel = "BOGUS"
memory = 64
nics = [{{ switch = "{sw}" }}]
""".replace("BOGUS", str(bogus)))
    links_before, ns_before = links(), set(list_namespaces())
    r = vm("up", str(path))
    assert r.returncode != 0 and n["m"] in r.stderr
    assert labrec.load(lab) is None and records.find(n["m"]) is None
    assert mine(links() - links_before, n) == set()
    assert mine(set(list_namespaces()) - ns_before, n) == set()


def test_up_refuses_an_invalid_file_before_making_anything(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[lab]\nname = "x"\n[machines.a]\nguest = "tiny"\nmemory = "-3G"\n')
    r = vm("up", str(path))
    assert r.returncode == 6
    assert f"{path}:5: machines.a.memory" in r.stderr


def test_down_stops_by_force_unless_graceful(tiny: Any, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    from vmanager import lab as labs
    from vmanager.state import attach, detach
    lab, path, n = lab_file(tmp_path, """
[lab]
name = "{lab}"

[machines.{m}]
guest = "tiny"
memory = 192

[machines.{gw}]
guest = "tiny"
memory = 192
""")
    spec = labs.load(path)
    for graceful in (False, True):
        labs.up(spec, wait_ready=True)
        try:
            deaf = attach(n["m"])
            deaf.succeed("killall acpid")          # this one ignores the power button
            detach(deaf)
            caplog.clear()
            started = time.monotonic()
            with caplog.at_level(logging.INFO):
                removed = labs.down(lab, graceful=graceful, timeout=3)
            took = time.monotonic() - started
        finally:
            labs.down(lab)
        assert sorted(removed) == sorted([f"machine {n['m']}", f"machine {n['gw']}"])
        forced = [r.getMessage() for r in caplog.records if "stopping it by force" in
                  r.getMessage()]
        powered = [r.name for r in caplog.records if "powered off" in r.getMessage()]
        if graceful:
            # the listening guest powered off by itself; the deaf one was forced after 3 s
            assert len(forced) == 1 and n["m"] in forced[0] and took >= 3
            assert powered == [f"vmanager.machine.{n['gw']}"]
        else:
            assert forced == [] and powered == [] and took < 10
