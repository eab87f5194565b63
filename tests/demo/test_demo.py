"""The demo end to end: a lab of three guests comes up, works, and leaves nothing behind.

The demo runs as a subprocess (``python -m vmanager.demo``) on a copy of the
packaged lab whose names carry a per-test tag, so it cannot collide with a demo
someone else runs on the same host. Traffic stays inside the lab's namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from vmanager import demo
from vmanager.lab import record as labrec
from vmanager.net import list_namespaces
from vmanager.state import records

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_packaged_lab_is_the_example_lab() -> None:
    lab = demo.packaged_lab()
    assert lab.source == (REPO / "examples" / "demo-lab.toml").read_text()
    p = demo.plan(lab)
    assert p.machines == ("demo-a", "demo-b", "demo-c")
    assert p.router.mode == "nat" and p.outside.name == "demo-out"
    assert str(p.subnet) == "10.80.0.0/24" and p.outside_ip == "198.51.100.1"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")


def tagged_lab(tmp_path: Path) -> tuple[str, Path]:
    """The packaged lab with every name ("demo...") renamed to a fresh tag."""
    tag = f"dm{secrets.token_hex(2)}"
    path = tmp_path / "lab.toml"
    path.write_text(demo.packaged_lab().source.replace("demo", tag))
    return tag, path


def run_demo(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vmanager.demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy(), **kwargs)


def nft_tables() -> set[str]:
    if shutil.which("nft") is None:
        return set()
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                         check=True).stdout
    return set(out.splitlines())


def assert_nothing_left(tag: str, tables_before: set[str]) -> None:
    assert [n for n in list_namespaces() if tag in n] == []
    assert [n for n in os.listdir("/sys/class/net") if tag in n] == []
    assert labrec.load(tag) is None
    assert [n for n in ("a", "b", "c") if records.find(f"{tag}-{n}")] == []
    assert nft_tables() == tables_before
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            assert tag.encode() not in cmdline, cmdline


@needs_root
@pytest.mark.guest
@pytest.mark.net
def test_demo_runs_end_to_end_and_leaves_nothing(tiny: Any, tmp_path: Path) -> None:
    tag, lab = tagged_lab(tmp_path)
    out = tmp_path / "out"
    tables = nft_tables()
    started = time.monotonic()
    proc = run_demo("--lab", str(lab), "--out", str(out))
    stdout, stderr = proc.communicate(timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"demo exited {proc.returncode}\n{stdout}\n{stderr}"
    assert "all steps worked" in stdout and "nothing left behind" in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["problems"] == []
    subnet = ipaddress.IPv4Network(summary["subnet"])
    assert subnet == ipaddress.IPv4Network("10.80.0.0/24")
    machines = summary["machines"]
    assert [m["name"] for m in machines] == [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
    addresses = [m["address"] for m in machines]
    assert len(set(addresses)) == 3
    for m in machines:
        address = ipaddress.IPv4Address(m["address"])
        assert address in subnet and address != subnet.network_address + 1  # not the router
        assert m["lease"] == m["address"]  # what the guest has is what dnsmasq leased
        assert m["boot_s"] > 0
        targets = {p["target"]: p for p in m["pings"]}
        assert set(targets) == {n["name"] for n in machines if n is not m} | {"outside"}
        assert all(p["ok"] for p in m["pings"]), m["pings"]
        assert targets["outside"]["address"] == "198.51.100.1"
        # the printed summary table has the machine's row with address and MAC
        row = next(line for line in stdout.splitlines() if line.startswith(m["name"] + " "))
        assert m["address"] in row and m["mac"] in row and "FAIL" not in row

    shot = out / f"{tag}-a-screen.png"
    assert shot.read_bytes()[:8] == PNG_MAGIC
    from PIL import Image
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width > 0
        assert sum(image.convert("L").histogram()[129:]) > 0  # text on the screen
    root = ET.parse(out / "topology.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert f"{tag}-gw" in ET.tostring(root, encoding="unicode")
    assert (out / "topology.mmd").read_text().startswith("flowchart")
    assert str(out) in stdout  # the output directory is printed

    assert_nothing_left(tag, tables)
    assert elapsed < 120, f"the demo took {elapsed:.0f} s"


@needs_root
@pytest.mark.guest
@pytest.mark.net
def test_ctrl_c_takes_the_lab_down(tiny: Any, tmp_path: Path) -> None:
    tag, lab = tagged_lab(tmp_path)
    tables = nft_tables()
    proc = run_demo("--lab", str(lab), "--out", str(tmp_path / "out"))
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # interrupt while the guests boot: everything is up
        seen.append(line)
        if line.startswith("waiting for the guests"):
            break
    else:
        pytest.fail(f"the demo never got to booting:\n{''.join(seen)}{proc.stderr}")
    assert list_namespaces().count(f"{tag}-a") == 1
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C does not cut the teardown short
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    assert "nothing left behind" in stdout and "interrupted" in stderr
    assert_nothing_left(tag, tables)
