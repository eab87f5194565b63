"""SIGTERM and SIGHUP to ``vmanager up`` roll the lab back, as Ctrl-C does.

Before, the default action killed the CLI at once: the NAT router's namespace,
its veth, dnsmasq (as root) and the switch stayed behind, unrecorded. The
signal is sent once the router is recorded, while the machine is being made;
the suite's leak check also fails the test for any process left (dnsmasq, QEMU).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vmanager.lab import record as labrec
from vmanager.net import list_namespaces

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)

LAB = """
[lab]
name = "{lab}"

[hosts.{out}]
port = "{up}"
address = "198.51.100.1/24"

[switches.{sw}]

[routers.{gw}]
trunk = "{out}"
subnet = "10.82.0.0/24"
trunk_address = "198.51.100.2/24"
gateway = "198.51.100.1"
switch = "{sw}"

[machines.{m}]
guest = "tiny"
memory = 256
nics = [{{ switch = "{sw}" }}]
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_up_rolls_back_everything(tiny: Any, tmp_path: Path,
                                                  signum: int) -> None:
    t = secrets.token_hex(2)
    n = {"lab": f"k{t}", "out": f"ko{t}", "up": f"ku{t}", "sw": f"ks{t}", "gw": f"kg{t}",
         "m": f"km{t}"}
    path = tmp_path / "lab.toml"
    path.write_text(LAB.format(**n))
    proc = subprocess.Popen([sys.executable, "-m", "vmanager.cli.main", "up", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            rec = labrec.load(n["lab"])
            if rec is not None and rec.find("router", n["gw"]) is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"up ended before the signal: {proc.communicate()}"
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            subprocess.run([sys.executable, "-m", "vmanager.cli.main", "down", str(path)],
                           capture_output=True, timeout=120)
    assert proc.returncode == 128 + signum, err
    assert labrec.load(n["lab"]) is None, "the lab record was left"
    mine = {x for x in os.listdir("/sys/class/net") if t in x}
    assert mine == set(), f"links left: {mine}"
    left = {x for x in list_namespaces() if t in x}
    assert left == set(), f"namespaces left: {left}"
