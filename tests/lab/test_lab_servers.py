"""Lab files with [servers]: validation, placement and each server's part (no SSH needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmanager.errors import ConfigError, LabFileError
from vmanager.lab import parse
from vmanager.lab.remote import ssh_argv
from vmanager.lab.servers import parse_ssh, part, servers_used, stretched, vxlan_ifname

LAB = """
[lab]
name = "two"

[servers.s1]
ssh = "root@192.0.2.1"
identity = "keys/lab"
known_hosts = "keys/known_hosts"
underlay = "eth1"

[servers.s2]
ssh = "admin@192.0.2.2:2222"
vmanager = "/opt/vm/bin/vmanager --verbose"
vxlan_port = 4790

[switches.lan]
[switches.solo]
vni = 77

[machines.a]
guest = "tiny"
server = "s1"
nics = [{ switch = "lan" }, { switch = "solo" }]

[machines.b]
guest = "tiny"
server = "s2"
nics = [{ switch = "lan" }]
"""


def lab(text: str = LAB) -> object:
    return parse(text, path=Path("/labs/two.toml"))


def test_servers_are_parsed_with_paths_relative_to_the_lab_file() -> None:
    parsed = lab()
    s1, s2 = parsed.servers  # type: ignore[attr-defined]
    assert (s1.user, s1.host, s1.port, s1.address) == ("root", "192.0.2.1", None, "192.0.2.1")
    assert s1.identity == "/labs/keys/lab" and s1.known_hosts == "/labs/keys/known_hosts"
    assert (s2.user, s2.port, s2.vmanager, s2.vxlan_port) == (
        "admin", 2222, ("/opt/vm/bin/vmanager", "--verbose"), 4790)


def test_each_server_gets_its_machines_and_a_vxlan_for_the_stretched_switch() -> None:
    parsed = lab()
    assert servers_used(parsed) == ["s1", "s2"]
    assert stretched(parsed) == {"lan": ["s1", "s2"]}
    p1 = part(parsed, "s1")
    assert [m.name for m in p1.machines] == ["a"]
    by_name = {s.name: s for s in p1.switches}
    assert set(by_name) == {"lan", "solo"}
    assert by_name["solo"].stretch is None
    vx = by_name["lan"].stretch
    assert vx is not None
    assert (vx.local, vx.remotes, vx.port, vx.underlay) == ("192.0.2.1", ("192.0.2.2",),
                                                            4789, "eth1")
    p2 = part(parsed, "s2")
    assert [s.name for s in p2.switches] == ["lan"]
    vx2 = p2.switches[0].stretch
    assert vx2 is not None and vx2.tunnels == vx.tunnels
    (tunnel,) = vx.tunnels  # a plain switch: one port, on the switch's VNI, no VLAN
    assert (tunnel.ifname, tunnel.vlan) == (vxlan_ifname("two", "lan"), None)
    assert (vx2.local, vx2.remotes, vx2.port) == ("192.0.2.2", ("192.0.2.1",), 4790)
    assert len(vxlan_ifname("two", "lan")) <= 15
    assert part(parsed, None).machines == ()


@pytest.mark.parametrize("change, message", [
    (('server = "s2"', 'server = "s9"'), "server 's9' is not defined"),
    (('ssh = "root@192.0.2.1"', 'ssh = "-oProxyCommand=x"'), "not a host name"),
    (('ssh = "root@192.0.2.1"', 'ssh = "ro ot@h"'), "not a valid user name"),
    (('ssh = "root@192.0.2.1"', 'ssh = "root@h:99999"'), "port"),
    (('vxlan_port = 4790', 'vxlan_port = 0'), "UDP port"),
    (('vni = 77', 'vni = 16777216'), "VNI"),
    (('[servers.s2]', '[servers.local]'), "'local' means"),
    (('ssh = "root@192.0.2.1"', 'ssh = "root@server-one"'), "needs address"),
])
def test_bad_servers_are_refused_by_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(LabFileError, match=message):
        lab(LAB.replace(*change, 1))


VLAN_LAB = """
[lab]
name = "vl"

[servers.s1]
ssh = "root@192.0.2.1"
[servers.s2]
ssh = "root@192.0.2.2"

[switches.lan]
vlan_filtering = true
vni = 5000
[switches.plain]
vni = 7000

[machines.a]
guest = "tiny"
server = "s1"
nics = [{ switch = "lan", vlan = 10 }, { switch = "plain" }]

[machines.b]
guest = "tiny"
server = "s2"
nics = [{ switch = "lan", vlan = 10 }, { switch = "plain" }]

[machines.c]
guest = "tiny"
server = "s2"
nics = [{ switch = "lan", vlan = 20 }, { switch = "lan" }, { switch = "lan", vlans = [30, 4094] }]
"""


def test_a_vlan_aware_switch_crosses_on_one_vxlan_port_per_vlan_of_the_whole_lab() -> None:
    from vmanager import validate
    from vmanager.lab.stretch import vlan_vni
    parsed = lab(VLAN_LAB)
    plans = {}
    for server in ("s1", "s2"):
        by_name = {s.name: s.stretch for s in part(parsed, server).switches}
        stretch = by_name["lan"]
        assert stretch is not None
        plans[server] = stretch.tunnels
        # the plain switch beside it keeps one port on its own VNI
        plain = by_name["plain"]
        assert plain is not None and [(t.vni, t.vlan) for t in plain.tunnels] == [(7000, None)]
    # every VLAN used on the switch anywhere (c's are all on s2; s1 gets them too, so a
    # machine can move there): access VLANs, VLAN 1 of an untagged NIC, a trunk's VLANs
    assert plans["s1"] == plans["s2"]
    assert [(t.vlan, t.vni) for t in plans["s1"]] == [
        (1, 5001), (10, 5010), (20, 5020), (30, 5030), (4094, 9094)]
    names = [t.ifname for t in plans["s1"]]
    assert len(set(names)) == len(names)
    assert names == [vxlan_ifname("vl", "lan", t.vlan) for t in plans["s1"]]
    for name in names:
        assert validate.ifname(name) == name and len(name.encode()) <= 15
    assert vxlan_ifname("vl", "lan") not in names  # the plain port's name is not reused
    # the VNI wraps past the largest one to 1, never 0
    assert vlan_vni(16777215, 1) == 1 and vlan_vni(16777210, 10) == 5


def test_without_a_vni_the_vlan_vnis_follow_the_derived_switch_vni() -> None:
    from vmanager.lab.stretch import vlan_vni, vni_of
    parsed = lab(VLAN_LAB.replace("vni = 5000\n", "", 1))
    stretch = {s.name: s.stretch for s in part(parsed, "s1").switches}["lan"]
    assert stretch is not None
    base = vni_of("vl", "lan", None)
    assert [t.vni for t in stretch.tunnels] == [vlan_vni(base, v) for v in (1, 10, 20, 30, 4094)]


def test_tunnels_on_one_vni_are_refused_naming_both() -> None:
    # the plain switch's VNI is that of lan's VLAN 10 (5000 + 10)
    with pytest.raises(LabFileError, match=r"switch 'lan' \(VLAN 10\) and switch 'plain' "
                       "would both cross on VNI 5010; VLAN v of a VLAN-aware switch"):
        lab(VLAN_LAB.replace("vni = 7000", "vni = 5010", 1))
    # VLAN 5 of a second VLAN-aware switch at 5005 is 5010 too
    text = VLAN_LAB.replace("vni = 7000", "vni = 5005\nvlan_filtering = true", 1)
    with pytest.raises(LabFileError, match=r"switch 'lan' \(VLAN 10\) and switch 'plain' "
                       r"\(VLAN 5\) would both cross on VNI 5010.*at least 4095 apart"):
        lab(text.replace('{ switch = "plain" }', '{ switch = "plain", vlan = 5 }'))
    # two plain switches on one VNI, as before
    with pytest.raises(LabFileError, match="give one of them vni"):
        lab(LAB.replace("[switches.lan]", "[switches.lan]\nvni = 77", 1)
            .replace('nics = [{ switch = "lan" }]', 'nics = [{ switch = "lan" }, '
                     '{ switch = "solo" }]'))


def test_a_switch_on_the_local_host_and_a_server_is_refused() -> None:
    text = LAB.replace('server = "s2"\n', "", 1)
    with pytest.raises(LabFileError, match="used on the local host and on servers"):
        lab(text)


def test_ssh_parsing() -> None:
    assert parse_ssh("h") == (None, "h", None)
    assert parse_ssh("u@[2001:db8::1]:22") == ("u", "2001:db8::1", 22)
    with pytest.raises(ConfigError):
        parse_ssh("[2001:db8::1")


def test_ssh_argv_checks_host_keys_and_quotes_the_remote_command() -> None:
    s2 = lab().servers[1]  # type: ignore[attr-defined]
    argv = ssh_argv(s2, ["exec", "b", "--", "echo 'a b'; rm -rf /"])
    assert argv[0] == "ssh"
    joined = " ".join(argv)
    assert "StrictHostKeyChecking=yes" in joined and "BatchMode=yes" in joined
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:-1] == ["admin@192.0.2.2", "--"]
    import shlex
    assert shlex.split(argv[-1]) == ["/opt/vm/bin/vmanager", "--verbose", "exec", "b", "--",
                                     "echo 'a b'; rm -rf /"]


def test_place_moves_a_machine_between_parts() -> None:
    from vmanager.lab.multi import apply_place
    moved = apply_place(lab(), ["a=s2"])  # type: ignore[arg-type]
    assert [m.name for m in part(moved, "s2").machines] == ["a", "b"]
    assert part(moved, "s1").machines == ()
    assert stretched(moved) == {}  # lan is used on s2 only now
    for bad, message in ((["a"], "MACHINE=SERVER"), (["a=s9"], "MACHINE=SERVER"),
                         (["zz=s1"], "no machine zz")):
        with pytest.raises(ConfigError, match=message):
            apply_place(lab(), bad)  # type: ignore[arg-type]


def test_migrate_refuses_bad_requests_before_reaching_any_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMANAGER_STATE_DIR", str(tmp_path / "state"))
    from vmanager.errors import NotFoundError
    from vmanager.lab.migrate import migrate
    parsed = lab()
    with pytest.raises(ConfigError, match="no machine 'zz'"):
        migrate(parsed, "zz", to="s2")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no server 's9'"):
        migrate(parsed, "a", to="s9")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="runs on no server"):
        migrate(parsed, "a", to="s2")  # type: ignore[arg-type]  # the lab is not up
