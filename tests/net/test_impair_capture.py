"""VirtualNic.impair / capture on real kernel objects of this host.

This host's kernel has no sch_netem: netem itself is proven in a guest kernel
(tests/netkernel); here a rate alone (token bucket fallback) is proven with
iperf3, the clear error for the rest, and packet capture with tcpdump.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from _nettools import ping

from vmanager.errors import ConfigError, HostError, StateError
from vmanager.net import Interface, Switch, VirtualNic, impair, sys_command
from vmanager.net.capture import Capture


def _netem_available() -> bool:
    return Path("/proc/net/psched").exists() and os.path.isdir(
        "/sys/module/sch_netem")


@pytest.fixture
def pair(netns: Any, name: Any) -> Iterator[tuple[VirtualNic, VirtualNic, str, str]]:
    """Two namespaces, each with a tap-mode NIC addressed on its bridge, on one switch."""
    with ExitStack() as stack:
        sw = stack.enter_context(Switch(name("sw")))
        nics = []
        spaces = []
        for i in (1, 2):
            ns = netns()
            nic = stack.enter_context(VirtualNic(name("vn"), namespace=ns, mode="tap"))
            assert nic.tap_bridge is not None
            inner = Interface(nic.tap_bridge, netns=ns)
            inner.add_address(f"10.77.0.{i}/24")
            inner.up()
            Interface("lo", netns=ns).up()
            sw.connect(nic)
            nics.append(nic)
            spaces.append(ns)
        assert ping(spaces[0], "10.77.0.2", count=2)
        yield nics[0], nics[1], spaces[0], spaces[1]


def _throughput(client_ns: str, server_ns: str, address: str) -> float:
    """Bits per second from ``client_ns`` to ``address`` in ``server_ns`` (iperf3, 2 s)."""
    from vmanager.net._nsexec import popen
    server = popen(["iperf3", "-s", "-1", "-B", address, "-p", "5299"], netns=server_ns,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            result = sys_command(["iperf3", "-c", address, "-p", "5299", "-t", "2", "-J"],
                                 netns=client_ns, check=False, timeout=30)
            data = json.loads(result.stdout) if result.returncode == 0 else {"error": 1}
            if "error" not in data:
                end = data["end"]
                total = end.get("sum_received") or end.get("sum") or {}
                assert "bits_per_second" in total, result.stdout[-2000:]
                return float(total["bits_per_second"])
            time.sleep(0.1)
        raise AssertionError(f"iperf3 never connected: {result.stderr}")
    finally:
        server.kill()
        server.wait()


def test_impair_validates_each_field_by_name() -> None:
    for kwargs, field in ((dict(loss="120%"), "loss"), (dict(delay="-1ms"), "delay"),
                          (dict(delay="2h"), "delay"), (dict(rate="fast"), "rate"),
                          (dict(delay="61s"), "delay"), (dict(corrupt=101), "corrupt"),
                          (dict(jitter="5ms"), "jitter"), (dict(reorder="5%"), "reorder"),
                          (dict(duplicate=True), "duplicate"), (dict(rate="4bit"), "rate"),
                          (dict(delay="10ms", jitter="20ms"), "jitter")):
        with pytest.raises(ConfigError, match=f"^{field}:"):
            impair.impairment(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^bogus: unknown impairment"):
        impair.from_mapping({"bogus": 1})
    imp = impair.impairment(delay="40ms", jitter="5ms", loss="1%", rate="10mbit",
                            corrupt=0.5, duplicate="2%", reorder="3%")
    assert (imp.delay_us, imp.jitter_us, imp.loss, imp.rate_bit) == (40000, 5000, 1.0,
                                                                     10**7)
    assert imp.describe() == ("delay 40ms jitter 5ms loss 1% corrupt 0.5% duplicate 2% "
                              "reorder 3% rate 10mbit")
    assert impair.impairment(delay=1.5).delay_us == 1500
    assert impair.impairment(rate="125kbps").rate_bit == 10**6
    assert not impair.impairment()


def test_impair_needs_a_created_nic() -> None:
    nic = VirtualNic("vnnotmade0", create=False)
    with pytest.raises(StateError):
        nic.impair(delay="10ms")


@pytest.mark.skipif(_netem_available(), reason="this kernel has sch_netem")
def test_without_sch_netem_impair_says_which_kernel_feature_is_missing(pair: Any) -> None:
    a, _b, _nsa, _nsb = pair
    with pytest.raises(HostError, match=r"sch_netem.*CONFIG_NET_SCH_NETEM"):
        a.impair(delay="40ms", loss="1%")
    assert not a.impairment  # nothing half-applied


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3")
def test_rate_alone_limits_what_the_machine_side_sends_and_clear_restores(pair: Any) -> None:
    a, _b, nsa, nsb = pair
    before = _throughput(nsa, nsb, "10.77.0.2")
    got = a.impair(rate="5mbit")
    assert got.rate_bit == 5 * 10**6 and a.impairment == got
    limited = _throughput(nsa, nsb, "10.77.0.2")
    # the other direction is not shaped: the impairment is on a's egress only
    reverse = _throughput(nsb, nsa, "10.77.0.1")
    a.clear_impairment()
    assert not a.impairment
    after = _throughput(nsa, nsb, "10.77.0.2")
    assert limited < 6.5e6, (before, limited)
    assert before > 5 * limited and after > 5 * limited, (before, limited, after)
    assert reverse > 5 * limited, (reverse, limited)
    a.clear_impairment()  # nothing to clear is fine


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_capture_writes_a_private_pcap_that_tcpdump_reads(pair: Any, tmp_path: Path) -> None:
    a, _b, nsa, _nsb = pair
    out = tmp_path / "a.pcap"
    with a.capture(out) as cap:
        assert cap.running
        assert ping(nsa, "10.77.0.2", count=3)
    assert not cap.running
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert cap.frames is not None and cap.frames >= 6
    text = subprocess.run(["tcpdump", "-n", "-r", str(out)], capture_output=True,
                          text=True, check=True).stdout
    assert text.count("10.77.0.1 > 10.77.0.2: ICMP echo request") >= 3, text
    assert text.count("10.77.0.2 > 10.77.0.1: ICMP echo reply") >= 3, text


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_capture_stops_by_itself_after_count_frames(pair: Any, tmp_path: Path) -> None:
    a, _b, nsa, _nsb = pair
    out = tmp_path / "c.pcap"
    cap = Capture(a.sink, netns=a.namespace, path=out, count=2, filter="icmp").start()
    try:
        assert ping(nsa, "10.77.0.2", count=3)
        assert cap.wait(10)
    finally:
        cap.stop()
    assert cap.frames == 2
    text = subprocess.run(["tcpdump", "-n", "-r", str(out)], capture_output=True,
                          text=True, check=True).stdout
    assert len(text.splitlines()) == 2, text
    assert all("ICMP echo" in line for line in text.splitlines()), text


def test_capture_refuses_a_file_of_another_user_and_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="count"):
        Capture("lo", path=tmp_path / "x", count=0)
    with pytest.raises(ConfigError, match="duration"):
        Capture("lo", path=tmp_path / "x", duration=-1)
    other = tmp_path / "other.pcap"
    other.write_bytes(b"keep")
    os.chown(other, 12345, 12345)
    with pytest.raises(ConfigError, match="another user"):
        Capture("lo", path=other).start()
    assert other.read_bytes() == b"keep"
    link = tmp_path / "link.pcap"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(ConfigError, match="not a regular file"):
        Capture("lo", path=link).start()
    assert not (tmp_path / "target").exists()
