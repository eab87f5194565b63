"""A real Debian 12 booted from its own disk (GRUB under SeaBIOS, systemd), driven without
any backdoor: the guest agent, cloud-init, the serial console, SSH over a lab network,
a quiesced snapshot, hot-plugged NICs with DHCP and an ACPI power-off.

One guest is booted for the module (about a minute under TCG); the tests run in
file order and the last one powers it off.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from vmanager import CloudInit, Harddrive, Machine, images
from vmanager.errors import GuestCommandError
from vmanager.net import Namespace, Router, Switch, sys_command
from vmanager.qemu.login import LoginError
from vmtest_util import unique_name

pytestmark = pytest.mark.guest
PASSWORD = "correct horse"


class Debian:
    def __init__(self, m: Machine, key: Path, ready_s: float) -> None:
        self.m = m
        self.key = key
        self.ready_s = ready_s


@pytest.fixture(scope="module")
def deb(debian_image: images.Image, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Debian]:
    tmp = tmp_path_factory.mktemp("deb")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    disk = Harddrive(tmp / "deb.qcow2", backing=debian_image.path)
    disk.create()
    ci = CloudInit(hostname="deb-t", users=["alice"], password=PASSWORD,
                   ssh_authorized_keys=[(tmp / "id_ed25519.pub").read_text()],
                   runcmd=["echo first-boot > /var/tmp/runcmd-ran"])
    m = Machine(unique_name("deb"), memory=1024, harddrives=disk, cloud_init=ci)
    try:
        m.start_vm()
        ready = m.wait_ready(600)
        m.succeed("cloud-init status --wait", timeout=600)
        yield Debian(m, key, ready)
    finally:
        m.kill()


def test_boots_from_its_own_disk_and_the_agent_answers(deb: Debian) -> None:
    m = deb.m
    assert "-kernel" not in m.argv            # GRUB on the disk booted it
    assert m.agent.os_info().version_id == "12"
    status, out = m.execute("echo out; echo err >&2; exit 7")
    result = m.execute("echo out; echo err >&2; exit 7")
    assert (status, out, result.stderr) == (7, "out\n", "err\n")
    assert m.succeed("cat /proc/cmdline").startswith("BOOT_IMAGE=/vmlinuz")
    with pytest.raises(GuestCommandError) as info:
        m.succeed("exit 3")
    assert info.value.status == 3
    assert m.execute("sleep 30", timeout=2).status == 137     # killed, as the shell does
    m.agent.write_file("/var/tmp/blob", bytes(range(256)) * 1000)
    assert m.agent.read_file("/var/tmp/blob") == bytes(range(256)) * 1000
    assert m.succeed("sha256sum /var/tmp/blob | cut -c1-8") != ""
    assert {i.name for i in m.agent.network_interfaces()} >= {"lo"}
    drift = abs(m.agent.get_time() - time.time())
    m.agent.sync_time()
    assert abs(m.agent.get_time() - time.time()) < max(2.0, drift)


def test_cloud_init_made_the_user_host_name_and_ran_runcmd(deb: Debian) -> None:
    m = deb.m
    assert m.succeed("hostname").strip() == "deb-t"
    assert m.agent.hostname() == "deb-t"
    assert "alice" in m.succeed("id -nG alice")
    assert m.succeed("sudo -n -u alice sudo -n true; echo ok").strip() == "ok"
    keys = m.succeed("cat /home/alice/.ssh/authorized_keys")
    assert deb.key.with_suffix(".pub").read_text().split()[1] in keys
    assert m.succeed("cat /var/tmp/runcmd-ran").strip() == "first-boot"


def test_serial_console_login(deb: Debian) -> None:
    m = deb.m
    with pytest.raises(LoginError):
        m.console.login("alice", "wrong password", timeout=120)
    session = m.console.login("alice", PASSWORD, timeout=120)
    try:
        assert session.succeed("id -un").strip() == "alice"
        status, out = session.execute("cd /etc && printf '%s|' \"$PWD\" 'it''s'; exit_now=5; "
                                      "(exit $exit_now)")
        assert (status, out) == (5, "/etc|its|")
        assert session.succeed("pwd").strip() == "/etc"        # a real, lasting shell
        lines = session.succeed("seq 1 2000")
        assert lines.splitlines() == [str(i) for i in range(1, 2001)]
    finally:
        session.logout()


def _veth_into(host_end: str, netns: str, address: str) -> None:
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_end, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": fd})
            ipr.link("set", index=ipr.link_lookup(ifname=host_end)[0], state="up")
    finally:
        os.close(fd)
    with IPRoute(netns=netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=index, address=address.split("/")[0],
                 prefixlen=int(address.split("/")[1]))
        ipr.link("set", index=index, state="up")


@pytest.mark.allow_leaks  # checked below: the machine's own namespace may stay
def test_hot_plugged_nic_gets_a_predictable_name_dhcp_and_ssh(deb: Debian) -> None:
    m = deb.m
    before = _net_objects()
    _hot_plugged_nic(deb)
    # The first NIC makes the machine's namespace, which lives as long as the
    # machine (the module's); any other namespace or link the test made is a leak.
    if not os.environ.get("VMANAGER_TEST_SHARED_HOST"):
        namespaces, links = (now - was for now, was in zip(_net_objects(), before, strict=True))
        assert namespaces <= {m.name} and not links, f"test leaked: {namespaces} {links}"


def _net_objects() -> tuple[set[str], set[str]]:
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    return netns, set(os.listdir("/sys/class/net"))


def _hot_plugged_nic(deb: Debian) -> None:
    m = deb.m
    outside = Namespace(unique_name("o"))
    client = Namespace(unique_name("c"))
    trunk, client_port = unique_name("t"), unique_name("c")
    try:
        _veth_into(trunk, outside.name, "10.251.0.1/24")
        with Router(unique_name("r"), trunk=trunk, mode="nat", trunk_address="10.251.0.2/24",
                    gateway="10.251.0.1", subnet="10.252.0.0/24") as router, \
                Switch(unique_name("s")) as lan:
            lan.connect(router)
            # "the host" on the lab network: a namespace with an address outside the
            # router's DHCP range (the upper half of the subnet)
            _veth_into(client_port, client.name, "10.252.0.10/24")
            lan.connect(client_port)
            nic = m.add_nic()
            try:
                lan.connect(nic)
                assert router.subnet is not None

                def leased() -> tuple[str, str] | None:
                    for iface in m.agent.network_interfaces():
                        if iface.mac == nic.mac:
                            for a in iface.addresses:
                                if a.family == "ipv4":
                                    return iface.name, a.address
                    return None
                deadline = time.monotonic() + 120
                while (found := leased()) is None and time.monotonic() < deadline:
                    time.sleep(1)
                assert found is not None, m.succeed("networkctl --no-pager; ip addr")
                ifname, ip = found
                assert re.fullmatch(r"en(s|p\d+s)\d+", ifname), ifname   # not eth*
                assert ip in {str(h) for h in router.subnet.hosts()}
                assert (nic.mac, ip) in router.leases()
                ssh = sys_command(["ssh", "-i", str(deb.key), "-o", "BatchMode=yes",
                                   "-o", "StrictHostKeyChecking=no",
                                   "-o", "UserKnownHostsFile=/dev/null",
                                   "-o", "ConnectTimeout=20", f"alice@{ip}", "id -un"],
                                  netns=client.name, timeout=120)
                assert ssh.stdout.strip() == "alice"
            finally:
                m.del_nic(nic)
                _delete_link(client_port)
    finally:
        _delete_link(trunk)
        client.close()
        outside.close()


def _delete_link(name: str) -> None:
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)


def test_quiesced_snapshot_freezes_and_thaws_the_guest(deb: Debian) -> None:
    m = deb.m
    m.succeed("echo before > /var/tmp/snap-mark && sync")
    m.snapshot("quiet", quiesce=True)
    try:
        assert m.agent.fsfreeze_status() == "thawed"
        # qemu-ga logs the freeze (then stops logging until it thaws)
        log = m.succeed("journalctl -b -u qemu-guest-agent --no-pager -o cat")
        assert "guest-fsfreeze called" in log
        m.succeed("echo after > /var/tmp/snap-mark && sync")     # writable again
        m.load_snapshot("quiet")
        m.wait_ready(120)
        assert m.succeed("cat /var/tmp/snap-mark").strip() == "before"
    finally:
        m.delete_snapshot("quiet")


def test_shutdown_powers_systemd_off_in_seconds(deb: Debian) -> None:
    """The ACPI power button, which systemd-logind handles once it runs (shutdown()'s
    default right after boot is the agent: the bench row measures that path)."""
    m = deb.m
    assert m.commands.via == "agent"
    started = time.monotonic()
    m.shutdown(timeout=120, via="acpi")
    took = time.monotonic() - started
    assert not m.is_alive()
    assert took < 60, f"ACPI power-off took {took:.1f} s"
