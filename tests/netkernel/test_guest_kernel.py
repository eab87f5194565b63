"""Bond and the VLAN-aware Switch proven on a real Debian kernel, inside a guest.

The host's kernel may lack bonding, 802.1Q and bridge VLAN filtering (then
``tests/net/test_bond.py`` skips and VLANs fall back to nftables without trunks).
This module boots the Python guest (:mod:`vmanager.guests.pyguest`: the tiny
guest's Debian kernel with Python, pyroute2 and this working tree's vmanager),
runs ``guest_checks.py`` inside it once, and judges the JSON it prints: each
check builds vmanager's ``Bond``/``Switch``/``Namespace`` objects on the
guest's kernel and pings through them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import Machine
from vmanager.guests.pyguest import python_guest
from vmtest_util import unique_name

pytestmark = [pytest.mark.guest, pytest.mark.net]

SCRIPT = Path(__file__).with_name("guest_checks.py")
GUEST_SCRIPT = "/root/guest_checks.py"
RESULT_PREFIX = "@@checks "


class GuestRun:
    """What one run of ``guest_checks.py`` printed."""

    def __init__(self, status: int, stdout: str, stderr: str, seconds: float) -> None:
        self.status, self.stdout, self.stderr, self.seconds = status, stdout, stderr, seconds
        lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        self.results: dict[str, Any] = (json.loads(lines[-1][len(RESULT_PREFIX):])
                                        if lines else {})

    def check(self, name: str) -> dict[str, Any]:
        """One check's findings; fails the test with the guest's output if it broke."""
        found = self.results.get(name)
        if found is None or "error" in found:
            pytest.fail(f"check {name!r} did not finish in the guest (exit {self.status}):\n"
                        f"{json.dumps(found, indent=1) if found else ''}\n"
                        f"--- guest stderr ---\n{self.stderr[-8000:]}\n"
                        f"--- guest stdout ---\n{self.stdout[-4000:]}")
        return found

    def explain(self, name: str) -> str:
        """The check's findings and the guest's log, for an assertion message."""
        return (f"{name}: {json.dumps(self.results.get(name), indent=1)}\n"
                f"--- guest stderr ---\n{self.stderr[-6000:]}")


@pytest.fixture(scope="module")
def run() -> Iterator[GuestRun]:
    """Boot one Python guest, run the checks once, power it off; the run's output."""
    guest = python_guest(extra_files={GUEST_SCRIPT: SCRIPT.read_bytes()})
    name = unique_name("pk")
    machine = Machine(name, memory=512, **guest.machine_args(name))
    try:
        machine.start_vm()
        machine.wait_ready(120)
        started = time.monotonic()
        result = machine.execute(f"python3 {GUEST_SCRIPT}", timeout=240)
        outcome = GuestRun(result.status, result.stdout, result.stderr,
                           time.monotonic() - started)
    finally:
        machine.kill()
    if not outcome.results:
        pytest.fail(f"guest_checks.py printed no results (exit {outcome.status}):\n"
                    f"--- stderr ---\n{outcome.stderr[-8000:]}\n"
                    f"--- stdout ---\n{outcome.stdout[-4000:]}")
    yield outcome


def test_the_guest_runs_debians_kernel_and_python(run: GuestRun) -> None:
    kernel = run.results["kernel"]
    assert kernel["executable"] == "/usr/bin/python3"
    assert kernel["python"].startswith("3.11."), kernel
    assert kernel["release"].endswith("-amd64"), kernel


def test_bond_is_made_by_its_constructor_and_removed_by_close_and_with(
        run: GuestRun) -> None:
    found = run.check("bond_constructs")
    why = run.explain("bond_constructs")
    assert found["made_by_constructor"] and found["bonding_proc"], why
    assert found["masters"] == ["bcbond", "bcbond"], why
    assert found["gone_after_close"] and found["masters_after_close"] == [None, None], why
    assert found["described_makes_nothing"], why
    assert found["made_by_with"] and found["gone_after_with"], why


def test_active_backup_bond_keeps_a_ping_going_when_the_active_member_goes_down(
        run: GuestRun) -> None:
    found = run.check("active_backup")
    why = run.explain("active_backup")
    assert found["ping_before"], why
    before, after = found["active_before"], found["active_after"]
    assert before == "abm1", why  # the primary carries traffic first
    assert found["failed_over"] and after == "abm2", why
    assert found["ping_running_at_down"], why
    # the continuous ping (one echo per 0.2 s) was running when abm1 went down
    # at ~2 s: replies keep coming after it, at most a second's worth is lost
    received, sent = found["received_seqs"], found["sent"]
    down_seq = int(found["down_at_s"] / found["interval_s"])
    assert any(seq > down_seq + 5 for seq in received), why
    assert len(found["lost_seqs"]) <= 5, why
    assert received and received[-1] == sent - 1, why
    assert "Currently Active Slave: abm2" in found["bonding"], why
    assert found["ping_after"], why


def test_802_3ad_bonds_aggregate_both_members_and_carry_traffic(run: GuestRun) -> None:
    found = run.check("lacp")
    why = run.explain("lacp")
    assert found["aggregated"], why
    for mine, partner in (("lag_a", "mac_b"), ("lag_b", "mac_a")):
        state = found[mine]
        assert state["ports"] == 2, why
        assert state["partner_mac"] == found[partner], why
        assert state["member_aggregators"] == [state["active_aggregator"]] * 2, why
    assert found["ping"], why


def test_vlan_switch_access_ports_reach_their_own_vlan_only(run: GuestRun) -> None:
    found = run.check("vlans")
    why = run.explain("vlans")
    assert found["backend"] == "kernel", why  # bridge VLAN filtering, not the nft fallback
    assert found["same_vlan"], why
    assert not found["other_vlan"], why
    assert not found["other_vlan_reverse"], why


def test_vlan_switch_trunk_carries_tagged_frames_to_8021q_subinterfaces(
        run: GuestRun) -> None:
    found = run.check("vlans")
    why = run.explain("vlans")
    assert found["ports"]["vlqt"] == {"vlan": None, "vlans": [10, 20]}, why
    assert found["trunk_vlan10"] and found["trunk_vlan10_to_vl3"], why
    assert found["trunk_vlan20"], why
    # VLAN 10's sub-interface cannot reach a host that lives on VLAN 20
    assert not found["trunk_vlan10_to_vlan20_host"], why


def test_netem_impairment_delays_loses_duplicates_and_clears(run: GuestRun) -> None:
    found = run.check("netem")
    why = run.explain("netem")
    assert found["reachable"], why
    before, delayed, after = found["before"], found["delayed"], found["after"]
    assert before["received"] == 5 and before["avg_ms"] < 60, why
    # the delay applies once per round trip (ne1's egress only)
    assert found["set_delay"]["delay_us"] == 100_000, why
    assert delayed["received"] == 5 and delayed["min_ms"] >= 100, why
    assert delayed["avg_ms"] < before["avg_ms"] + 160, why
    # every field reaches the kernel and reads back
    read = found["read_all"]
    assert (read["delay_us"], read["jitter_us"], read["rate_bit"]) == (50_000, 5_000, 10**7), why
    for key, value in (("loss", 0.5), ("corrupt", 0.1), ("duplicate", 0.2), ("reorder", 1.0)):
        assert abs(read[key] - value) < 0.01, (key, why)
    # 50% loss on the requests: of 40 echoes far fewer than 40 come back (binomial
    # 40 x 0.5: below 32 with probability > 0.9999), and some do
    assert 0 < found["lossy"]["received"] < 32, why
    assert found["duplicated"]["duplicates"] >= 3, why
    assert found["cleared"]["text"] == "", why
    assert "netem" not in found["qdiscs_after"], why
    assert after["received"] == 5 and after["avg_ms"] < 60, why


def test_a_lab_style_adopted_switch_applies_access_vlans_and_trunks(run: GuestRun) -> None:
    """Ports connected through adopt_switch (as `lab up` does) get their VLANs and trunks."""
    found = run.check("lab_vlans")
    why = run.explain("lab_vlans")
    assert found["adopted_backend"] == "kernel", why
    assert found["same_vlan"] and not found["other_vlan"], why
    assert not found["other_vlan_reverse"], why
    assert found["trunk_vlan10"] and found["trunk_vlan10_to_vl3"], why
    assert found["trunk_vlan20"] and not found["trunk_vlan10_to_vlan20_host"], why
