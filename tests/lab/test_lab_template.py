"""Lab machines with ``template = "PATH"``: clones that resume a saved guest, on a switch.

The guided test saves a template from a booted tiny guest (Python API), brings
up a lab of three clones of it on one switch through the CLI, and proves in the
guests that each resumed the saved guest (its marker) with its own hot-plugged
NIC, and that the clones reach each other over the switch. The other tests
check the key's validation without booting anything.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from vmanager import Machine
from vmanager.errors import LabFileError
from vmanager.lab import record as labrec
from vmanager.lab import spec, up
from vmanager.net import list_namespaces, stable_mac
from vmanager.state import records
from vmcli import ok, vm
from vmtest_util import unique_name

LAB = """
[lab]
name = "{lab}"

[switches.{sw}]
{machines}
"""

CLONE = """
[machines.{name}]
template = "{template}"
{extra}
nics = [{{ switch = "{sw}" }}]
"""


def lab_text(lab: str, sw: str, template: str, names: list[str],
             extra: str = 'guest = "tiny"') -> str:
    machines = "".join(CLONE.format(name=n, template=template, sw=sw, extra=extra)
                       for n in names)
    return LAB.format(lab=lab, sw=sw, machines=machines)


def fake_template(directory: Path, memory: int = 192, **config: Any) -> Path:
    """A directory that passes ``template.load`` (sparse RAM), for parse-only tests."""
    directory.mkdir()
    (directory / "state").write_bytes(b"")
    with (directory / "ram").open("wb") as f:
        f.truncate(memory << 20)
    (directory / "template.json").write_text(json.dumps(
        {"format": 1, "memory": memory, "machine_type": "pc", "devices": {},
         "source": "src", "config": config}))
    return directory


def test_the_template_key_is_resolved_confined_and_gives_the_memory(tmp_path: Path) -> None:
    fake_template(tmp_path / "tmpl", memory=192)
    path = tmp_path / "lab.toml"
    path.write_text(lab_text("lt", "sw", "tmpl", ["a"]))
    m = spec.load(path).machine("a")
    assert m.template == str(tmp_path / "tmpl") and m.memory == 192
    assert m.definition()["template"] == str(tmp_path / "tmpl")
    # a template is something to boot: a clone of a disk-booted source needs nothing else
    path.write_text(lab_text("lt", "sw", "tmpl", ["a"], extra=""))
    assert spec.load(path).machine("a").guest is None
    # a missing template still parses (inspect and down must work); up refuses it
    path.write_text(lab_text("lt", "sw", "gone", ["a"]))
    assert spec.load(path).machine("a").memory == 256


@pytest.mark.parametrize(("template", "extra", "message"), [
    ("/etc", "", "outside the lab's directory"),
    ("../x", "", "outside the lab's directory"),
    ("tmpl", 'guest = "debian-12"', "cannot have guest = 'debian-12'"),
    ("tmpl", "cloud_init = { hostname = \"x\" }\nguest = \"tiny\"", "cannot have cloud_init"),
])
def test_bad_template_keys_name_the_machine_and_key(
        tmp_path: Path, template: str, extra: str, message: str) -> None:
    fake_template(tmp_path / "tmpl")
    path = tmp_path / "lab.toml"
    path.write_text(lab_text("lt", "sw", template, ["a"], extra))
    with pytest.raises(LabFileError, match=message) as err:
        spec.load(path)
    assert err.value.field == "machines.a.template"  # type: ignore[attr-defined]
    assert err.value.line is not None  # type: ignore[attr-defined]
    path.write_text(lab_text("lt", "sw", "tmpl", ["a"]).replace(
        'template = "tmpl"', "template = 3"))
    with pytest.raises(LabFileError, match="must be str") as err:
        spec.load(path)
    assert err.value.field == "machines.a.template"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("make", "extra", "message"), [
    (False, "", "has no template.json"),
    (True, "memory = 256", "saved with 192 MiB but machine 'a' has memory 256"),
    (True, "cpus = 2", r"it has cpus 2 \(the template's: 1\)"),
    (True, 'firmware = "uefi"', r"firmware 'uefi' \(the template's: 'bios'\)"),
])
def test_up_refuses_a_bad_template_before_making_anything(
        tmp_path: Path, make: bool, extra: str, message: str) -> None:
    if make:
        fake_template(tmp_path / "tmpl", memory=192, cpus=1, firmware="bios")
    name = f"lt{secrets.token_hex(3)}"
    path = tmp_path / "lab.toml"
    path.write_text(lab_text(name, f"s{name}", "tmpl", ["a"], f'guest = "tiny"\n{extra}'))
    lab = spec.load(path)
    with pytest.raises(LabFileError, match=message) as err:
        up(lab)
    assert err.value.field == "machines.a.template"  # type: ignore[attr-defined]
    assert "machine 'a'" in str(err.value) and str(path) in str(err.value)
    assert labrec.load(name) is None and records.find("a") is None


@pytest.mark.guest
@pytest.mark.net
@pytest.mark.skipif(os.geteuid() != 0, reason="labs need root (namespaces, bridges)")
def test_a_lab_of_clones_on_one_switch_reach_each_other(tiny: Any, tmp_path: Path) -> None:
    source = unique_name("ls")
    src = Machine(source, **tiny.machine_args(source), memory=192, template_source=True)
    try:
        src.start_vm()
        src.wait_ready(120)
        src.succeed("echo from-the-template > /root/marker")
        src.save_template(tmp_path / "tmpl")
    finally:
        src.kill()
    t = secrets.token_hex(2)
    lab, sw = f"l{t}", f"s{t}"
    clones = [f"c{t}{i}" for i in range(3)]
    path = tmp_path / "lab.toml"
    # memory: the template's; the first clone has no boot options (it does not boot)
    path.write_text(lab_text(lab, sw, "tmpl", clones[:1], extra="") + "".join(
        CLONE.format(name=c, template="tmpl", sw=sw, extra='guest = "tiny"')
        for c in clones[1:]))
    ports = {"vn" + stable_mac(c, 0).replace(":", "")[4:] for c in clones}
    ns_before = set(list_namespaces())
    try:
        made = json.loads(ok("--json", "up", str(path), "--wait-ready"))["made"]
        assert len(made) == 1 + len(clones)
        for i, clone in enumerate(clones):
            # the saved guest, resumed: no boot, the source's marker
            assert ok("exec", clone, "cat", "/root/marker") == "from-the-template\n"
            # its own NIC, hot-plugged with the clone's stable MAC, addressed by hand
            mac = ok("exec", clone, "--", "i=0; while ! [ -e /sys/class/net/eth0 ] && "
                     "[ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "
                     "cat /sys/class/net/eth0/address").strip()
            assert mac == stable_mac(clone, 0)
            ok("exec", clone, "--", f"hostname {clone}; ip addr add 10.93.0.{i + 1}/24 "
               "dev eth0 && ip link set eth0 up")
        # over the switch: each clone reaches the others (and they are distinct guests)
        for i, clone in enumerate(clones):
            for j in range(len(clones)):
                if j != i:
                    ok("exec", clone, "--", f"ping -c 1 -W 5 10.93.0.{j + 1}", timeout=60)
        assert ok("exec", clones[1], "hostname").strip() == clones[1]
        info = json.loads(ok("--json", "inspect", str(path)))
        assert {m["name"]: (m["state"], m["template"]) for m in info["machines"]} == {
            c: ("running", str(tmp_path / "tmpl")) for c in clones}
        # up again keeps the running clones; a stopped one starts again from the template,
        # on its switch
        again = json.loads(ok("--json", "up", str(path)))
        assert again["made"] == [] and len(again["kept"]) == 1 + len(clones)
        ok("stop", clones[0])
        ok("start", clones[0])
        assert ok("exec", clones[0], "hostname").strip() == source
        ok("exec", clones[0], "--", "i=0; while ! [ -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; "
           "do sleep 0.1; i=$((i+1)); done; ip addr add 10.93.0.1/24 dev eth0 && "
           "ip link set eth0 up && ping -c 1 -W 5 10.93.0.2", timeout=60)
    finally:
        removed = json.loads(ok("--json", "down", str(path)))["removed"]
    assert len(removed) == 1 + len(clones)
    assert labrec.load(lab) is None and all(records.find(c) is None for c in clones)
    assert not ports & set(os.listdir("/sys/class/net")) and sw not in os.listdir(
        "/sys/class/net")
    assert not set(clones) & (set(list_namespaces()) - ns_before)
    assert (tmp_path / "tmpl" / "ram").is_file()  # the template is the user's: kept
    assert vm("down", str(path)).returncode == 0
