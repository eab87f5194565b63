"""Runs *inside* the Python guest: vmanager.net's Bond and VLAN Switch on a real kernel.

The host's kernel may lack bonding, 802.1Q and bridge VLAN filtering; the guest
runs Debian's kernel, which has them all. The objects under test (``Bond``,
``Switch``, ``Namespace``, ``Interface``, ``sys_command``) are vmanager's; veth
pairs, the VLAN sub-interfaces of the trunk's far end, ``ping`` and
``/proc/net/bonding`` are the plumbing and eyes a user would bring.

Each check records what it saw in a dict; the whole result is printed as one
JSON line after :data:`RESULT_PREFIX` on stdout, for the test on the host to
judge. Progress and vmanager's log go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from vmanager.net import Bond, Interface, Namespace, Switch, sys_command
from vmanager.net._netlink import rtnl
from vmanager.net._nsexec import popen

RESULT_PREFIX = "@@checks "
Result = dict[str, Any]


def veth_into(outer: str, netns: str, *, inner: str = "eth0",
              address: str | None = None) -> None:
    """A veth pair: ``outer`` here (up), ``inner`` in ``netns`` (up, addressed)."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        with rtnl() as ipr:
            ipr.link("add", ifname=outer, kind="veth",
                     peer={"ifname": inner, "net_ns_fd": fd}, state="up")
    finally:
        os.close(fd)
    Interface("lo", netns=netns).up()
    end = Interface(inner, netns=netns)
    if address:
        end.add_address(address)
    end.up()


@contextmanager
def veth_pair(a: str, b: str) -> Iterator[None]:
    """A veth pair with both ends here, both up; deleted afterwards."""
    with rtnl() as ipr:
        ipr.link("add", ifname=a, kind="veth", peer={"ifname": b}, state="up")
    Interface(b).up()
    try:
        yield
    finally:
        with rtnl() as ipr:
            for index in ipr.link_lookup(ifname=a):
                ipr.link("del", index=index)


def ping(netns: str, address: str, *, count: int = 1, wait: int = 1) -> bool:
    """Whether ``address`` answers from inside ``netns`` (busybox ping)."""
    result = sys_command(["ping", "-c", str(count), "-W", str(wait), address], netns=netns,
                         check=False, timeout=count * wait + 20)
    return result.returncode == 0


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def bonding_proc(name: str) -> str:
    with open(f"/proc/net/bonding/{name}") as f:
        return f.read()


def check_active_backup(out: Result) -> None:
    """nsL -- swL -- bond0 ==(m1/p1, m2/p2)== swR -- nsR; m1 goes down mid-ping."""
    with ExitStack() as stack:
        for ns in ("abL", "abR"):
            stack.enter_context(Namespace(ns))
        swl = stack.enter_context(Switch("abswL"))
        swr = stack.enter_context(Switch("abswR"))
        veth_into("abeL", "abL", address="10.201.0.1/24")
        veth_into("abeR", "abR", address="10.201.0.2/24")
        stack.enter_context(veth_pair("abm1", "abp1"))
        stack.enter_context(veth_pair("abm2", "abp2"))
        bond = stack.enter_context(Bond("abbond", ["abm1", "abm2"], mode="active-backup",
                                        miimon=50, primary="abm1"))
        for sw, port in ((swl, bond.ifname), (swl, "abeL"), (swr, "abp1"), (swr, "abp2"),
                         (swr, "abeR")):
            sw.connect(port)
        out["ping_before"] = ping("abL", "10.201.0.2", count=3)
        out["active_before"] = before = bond.active
        interval, count, down_after = 0.2, 50, 2.0
        proc = popen(["ping", "-i", str(interval), "-c", str(count), "-W", "1", "10.201.0.2"],
                     netns="abL", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        time.sleep(down_after)
        assert before is not None
        out["ping_running_at_down"] = proc.poll() is None
        Interface(before).down()  # the active member is taken down
        out["down_at_s"] = round(time.monotonic() - started, 2)
        out["failed_over"] = wait_for(lambda: bond.active not in (None, before), timeout=5)
        out["active_after"] = bond.active
        stdout, stderr = proc.communicate(timeout=count * interval + 30)
        seqs = sorted({int(s) for s in re.findall(r"seq=(\d+)", stdout)})
        out["sent"], out["interval_s"] = count, interval
        out["received_seqs"] = seqs
        out["lost_seqs"] = sorted(set(range(count)) - set(seqs))
        out["ping_tail"] = (stdout + stderr)[-600:]
        out["bonding"] = bonding_proc("abbond")
        out["ping_after"] = ping("abL", "10.201.0.2", count=2)


def lacp_state(name: str) -> Result:
    """The active aggregator and each member's aggregator, from ``/proc/net/bonding``."""
    text = bonding_proc(name)
    head, _sep, members = text.partition("Slave Interface")
    active = head.partition("Active Aggregator Info:")[2]
    aggregator = re.search(r"Aggregator ID:\s*(\d+)", active)
    ports = re.search(r"Number of ports:\s*(\d+)", active)
    partner = re.search(r"Partner Mac Address:\s*(\S+)", active)
    return {"active_aggregator": aggregator.group(1) if aggregator else None,
            "ports": int(ports.group(1)) if ports else 0,
            "partner_mac": partner.group(1) if partner else None,
            "member_aggregators": re.findall(r"^Aggregator ID:\s*(\d+)", members, re.M)}


def aggregated(name: str, partner: str) -> bool:
    """Both members in the active aggregator, whose partner is the other bond."""
    state = lacp_state(name)
    return (state["ports"] == 2 and state["partner_mac"] == Interface(partner).mac
            and state["member_aggregators"] == [state["active_aggregator"]] * 2)


def check_lacp(out: Result) -> None:
    """nsA -- swA -- lagA ==(x1/y1, x2/y2)== lagB -- swB -- nsB, both bonds 802.3ad."""
    with ExitStack() as stack:
        for ns in ("lcA", "lcB"):
            stack.enter_context(Namespace(ns))
        swa = stack.enter_context(Switch("lcswA"))
        swb = stack.enter_context(Switch("lcswB"))
        veth_into("lceA", "lcA", address="10.202.0.1/24")
        veth_into("lceB", "lcB", address="10.202.0.2/24")
        stack.enter_context(veth_pair("lcx1", "lcy1"))
        stack.enter_context(veth_pair("lcx2", "lcy2"))
        lag_a = stack.enter_context(Bond("lclagA", ["lcx1", "lcx2"], mode="802.3ad"))
        lag_b = stack.enter_context(Bond("lclagB", ["lcy1", "lcy2"], mode="802.3ad"))
        swa.connect(lag_a)
        swa.connect("lceA")
        swb.connect(lag_b)
        swb.connect("lceB")
        started = time.monotonic()
        out["aggregated"] = wait_for(lambda: aggregated("lclagA", "lclagB")
                                     and aggregated("lclagB", "lclagA"), timeout=20, interval=0.5)
        out["aggregated_after_s"] = round(time.monotonic() - started, 2)
        out["mac_a"], out["mac_b"] = Interface("lclagA").mac, Interface("lclagB").mac
        out["lag_a"], out["lag_b"] = lacp_state("lclagA"), lacp_state("lclagB")
        out["ping"] = ping("lcA", "10.202.0.2", count=3)
        if not out["aggregated"]:
            out["bonding_a"], out["bonding_b"] = bonding_proc("lclagA"), bonding_proc("lclagB")


def check_vlans(out: Result, *, adopted: bool = False) -> None:
    """Access ports on VLANs 10/20/10 and a trunk (10, 20) into a namespace with 802.1Q.

    ``adopted``: every port is connected through a fresh Switch object for the
    existing bridge, as ``vmanager lab up`` does (``net.adopt.adopt_switch``).
    """
    with ExitStack() as stack:
        for ns in ("vl1", "vl2", "vl3", "vlt"):
            stack.enter_context(Namespace(ns))
        sw = stack.enter_context(Switch("vlsw", vlan_filtering=True))
        out["backend"] = sw.vlan_backend
        veth_into("vlq1", "vl1", address="10.210.0.1/24")
        veth_into("vlq2", "vl2", address="10.210.0.2/24")
        Interface("eth0", netns="vl2").add_address("10.220.0.2/24")
        veth_into("vlq3", "vl3", address="10.210.0.3/24")
        veth_into("vlqt", "vlt")
        def connect(port: str, **vlans: Any) -> None:
            if not adopted:
                sw.connect(port, **vlans)
                return
            from vmanager.net import adopt as _net
            other = _net.adopt_switch(sw.name, vlan_filtering=True)
            other.connect(port, **vlans)
            out.setdefault("adopted_backend", other.vlan_backend)
            _net.forget(other)

        connect("vlq1", vlan=10)
        connect("vlq2", vlan=20)
        connect("vlq3", vlan=10)
        connect("vlqt", vlans=[10, 20])
        with rtnl("vlt") as ipr:  # the trunk's far end: 802.1Q sub-interfaces
            trunk = ipr.link_lookup(ifname="eth0")[0]
            for vid, address in ((10, "10.210.0.4"), (20, "10.220.0.4")):
                ipr.link("add", ifname=f"eth0.{vid}", kind="vlan", link=trunk, vlan_id=vid)
                index = ipr.link_lookup(ifname=f"eth0.{vid}")[0]
                ipr.addr("add", index=index, address=address, prefixlen=24)
                ipr.link("set", index=index, state="up")
        out["same_vlan"] = ping("vl1", "10.210.0.3", count=2)
        out["other_vlan"] = ping("vl1", "10.210.0.2", count=2)
        out["other_vlan_reverse"] = ping("vl2", "10.210.0.3", count=2)
        out["trunk_vlan10"] = ping("vlt", "10.210.0.1", count=2)
        out["trunk_vlan10_to_vl3"] = ping("vlt", "10.210.0.3", count=2)
        out["trunk_vlan20"] = ping("vlt", "10.220.0.2", count=2)
        # vl2 answers 10.210.0.2 only on VLAN 20; asked on VLAN 10 it must stay silent
        out["trunk_vlan10_to_vlan20_host"] = ping("vlt", "10.210.0.2", count=2)
        ports = sw.ports
        out["ports"] = {n: {"vlan": p.vlan, "vlans": sorted(p.vlans)} for n, p in ports.items()}


def check_bond_constructs(out: Result) -> None:
    """The seed's Bond: constructing it makes the bond; close() and 'with' remove it."""
    members = ["bcm1", "bcm2"]
    with veth_pair("bcm1", "bcp1"), veth_pair("bcm2", "bcp2"):
        bond = Bond("bcbond", members, mode="active-backup")  # no create(), no 'with'
        out["made_by_constructor"] = Interface("bcbond").exists
        out["masters"] = [Interface(m).master for m in members]
        out["bonding_proc"] = os.path.exists("/proc/net/bonding/bcbond")
        bond.close()
        bond.close()  # idempotent
        out["gone_after_close"] = not Interface("bcbond").exists
        out["masters_after_close"] = [Interface(m).master for m in members]
        described = Bond("bcbond2", members, create=False)
        out["described_makes_nothing"] = not Interface("bcbond2").exists
        with described:
            out["made_by_with"] = Interface("bcbond2").exists
        out["gone_after_with"] = not Interface("bcbond2").exists


def ping_stats(netns: str, address: str, *, count: int, interval: float = 0.2,
               size: int | None = None) -> Result:
    """Busybox ping's summary: replies received, duplicates, average RTT in ms."""
    argv = ["ping", "-c", str(count), "-i", str(interval), "-W", "2"]
    if size is not None:
        argv += ["-s", str(size)]
    result = sys_command([*argv, address], netns=netns, check=False,
                         timeout=count * (interval + 2) + 20)
    text = result.stdout + result.stderr
    received = re.search(r"(\d+) packets received", text)
    dups = re.search(r"\+(\d+) duplicates", text)
    rtt = re.search(r"min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+)", text)
    return {"received": int(received.group(1)) if received else 0,
            "duplicates": int(dups.group(1)) if dups else text.count("DUP!"),
            "min_ms": float(rtt.group(1)) if rtt else None,
            "avg_ms": float(rtt.group(2)) if rtt else None, "tail": text[-300:]}


def check_netem(out: Result) -> None:
    """VirtualNic.impair on a kernel with sch_netem: two namespaces, tap NICs, one switch."""
    from vmanager.net import VirtualNic
    # tap-mode NICs (a bridge in the namespace the namespace's stack can use) need
    # /dev/net/tun, which the tiny guest's /dev lacks
    sys_command(["modprobe", "tun"], check=False)
    if not os.path.exists("/dev/net/tun"):
        os.makedirs("/dev/net", exist_ok=True)
        os.mknod("/dev/net/tun", 0o600 | stat.S_IFCHR, os.makedev(10, 200))
    with ExitStack() as stack:
        sw = stack.enter_context(Switch("nesw"))
        nics = []
        for i in (1, 2):
            ns = stack.enter_context(Namespace(f"ne{i}"))
            nic = stack.enter_context(VirtualNic(f"nevn{i}", namespace=ns.name, mode="tap"))
            inner = Interface(nic.tap_bridge or "", netns=ns.name)
            inner.add_address(f"10.230.0.{i}/24")
            inner.up()
            Interface("lo", netns=ns.name).up()
            sw.connect(nic)
            nics.append(nic)
        a = nics[0]
        out["reachable"] = wait_for(lambda: ping("ne1", "10.230.0.2"), 10)
        out["before"] = ping_stats("ne1", "10.230.0.2", count=5)
        out["set_delay"] = a.impair(delay="100ms").as_dict()
        out["delayed"] = ping_stats("ne1", "10.230.0.2", count=5)
        out["set_all"] = a.impair(delay="50ms", jitter="5ms", loss="0.5%", rate="10mbit",
                                  corrupt="0.1%", duplicate="0.2%", reorder="1%").as_dict()
        out["read_all"] = a.impairment.as_dict()
        a.impair(loss="50%")
        out["lossy"] = ping_stats("ne1", "10.230.0.2", count=40)
        a.impair(duplicate="100%")
        out["duplicated"] = ping_stats("ne1", "10.230.0.2", count=5)
        a.clear_impairment()
        out["cleared"] = a.impairment.as_dict()
        out["after"] = ping_stats("ne1", "10.230.0.2", count=5)
        with rtnl("ne1") as ipr:
            index = ipr.link_lookup(ifname=a.sink)[0]
            out["qdiscs_after"] = [str(q.get_attr("TCA_KIND")) for q in
                                   ipr.get_qdiscs(index=index)]


CHECKS: dict[str, Callable[[Result], None]] = {
    "bond_constructs": check_bond_constructs,
    "active_backup": check_active_backup,
    "lacp": check_lacp,
    "vlans": check_vlans,
    "netem": check_netem,
    "lab_vlans": lambda out: check_vlans(out, adopted=True),
}


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(relativeCreated)7.0f %(name)s %(message)s")
    results: dict[str, Result] = {"kernel": {"release": os.uname().release,
                                             "python": sys.version.split()[0],
                                             "executable": sys.executable}}
    for name, check in CHECKS.items():
        started = time.monotonic()
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = {}
        try:
            check(results[name])
        except Exception:  # reported to the host test, which fails with it
            results[name]["error"] = traceback.format_exc()
        results[name]["seconds"] = round(time.monotonic() - started, 2)
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
