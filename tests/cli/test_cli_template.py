"""Templates through the CLI: ``define --template-source``, ``save-template``, clones.

Each ``vmanager`` command runs in its own process, as a user's would: the
source is started by ``vmanager start`` and saved by ``vmanager save-template``
(which attaches to it); the clones prove in their guests that they resume the
saved guest and keep their own writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmanager.cli.main import EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_USAGE
from vmcli import js, ok, vm
from vmtest_util import unique_name

pytestmark = pytest.mark.guest


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Machines a test defines; killed and undefined whatever happens."""
    made: list[str] = []
    yield made
    for name in made:
        vm("kill", name)
        vm("undefine", name)


def test_save_a_started_machine_and_start_two_clones_of_it(
        tiny: object, tmp_path: Path, names: list[str]) -> None:
    source, a, b = unique_name("ts"), unique_name("ta"), unique_name("tb")
    names += [source, a, b]
    disk = tmp_path / "source.qcow2"
    ok("define", source, "--guest", "tiny", "--memory", "192", "--template-source",
       "--disk", f"{disk}:8M")
    ok("start", source, "--wait-ready")
    ok("exec", source, "--", "echo from-the-source > /root/marker; "
       "echo disk-of-the-source | dd of=/dev/vda conv=fsync 2>/dev/null")
    directory = tmp_path / "tmpl"
    saved = js("save-template", source, str(directory))
    assert saved == {"name": source, "template": str(directory), "memory": 192,
                     "running": True}
    # the source's disk (attached from its definition) was copied into the template
    assert sorted(p.name for p in directory.iterdir()) == [
        "disk0.qcow2", "ram", "state", "template.json"]
    assert json.loads((directory / "template.json").read_text())["source"] == source
    # the source has ended; its definition stays
    assert {r["name"]: r for r in js("list")}[source]["state"] == "defined"

    # a clone's memory defaults to the template's; it needs no boot options (it does not boot)
    ok("define", a, "--template", str(directory))
    ok("define", b, "--guest", "tiny", "--template", str(directory), "--memory", "192")
    ok("start", a)
    ok("start", b)
    # no boot: each guest is the source's, marker and all
    for clone in (a, b):
        assert ok("exec", clone, "cat", "/root/marker") == "from-the-source\n"
        assert ok("exec", clone, "head", "-c", "19", "/dev/vda") == "disk-of-the-source\n"
    ok("exec", a, "--", "echo only-a > /root/marker; "
       "echo disk-of-a | dd of=/dev/vda conv=fsync 2>/dev/null")
    assert ok("exec", a, "cat", "/root/marker") == "only-a\n"
    assert ok("exec", b, "cat", "/root/marker") == "from-the-source\n"
    assert ok("exec", b, "head", "-c", "19", "/dev/vda") == "disk-of-the-source\n"
    rows = {r["name"]: r for r in js("list")}
    assert rows[a]["state"] == rows[b]["state"] == "running"
    for clone in (a, b):  # each QEMU maps the template's RAM file
        maps = Path(f"/proc/{rows[clone]['pid']}/maps").read_text()
        assert str((directory / "ram").resolve()) in maps

    # a stopped clone starts again from the template: what it wrote is gone
    ok("stop", a)
    ok("start", a)
    assert ok("exec", a, "cat", "/root/marker") == "from-the-source\n"
    assert ok("exec", a, "head", "-c", "19", "/dev/vda") == "disk-of-the-source\n"
    for clone in (a, b):
        ok("stop", clone)
    for name in (source, a, b):
        ok("undefine", name)
    names.clear()
    assert all(n not in {r["name"] for r in js("list")} for n in (source, a, b))
    # the template is the user's: vmanager leaves it in place
    assert (directory / "ram").is_file()


def test_bad_template_options_get_one_line_errors(
        tiny: object, tmp_path: Path, names: list[str]) -> None:
    name = unique_name("tx")
    names.append(name)
    r = vm("define", name, "--guest", "tiny", "--template", str(tmp_path / "none"))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stderr.count("\n") == 1 and "template.json" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "bad").mkdir()
    for f in ("ram", "state"):
        (tmp_path / "bad" / f).write_bytes(b"")
    (tmp_path / "bad" / "template.json").write_text("[]")
    r = vm("define", name, "--guest", "tiny", "--template", str(tmp_path / "bad"))
    assert r.returncode == EXIT_CONFIG and r.stderr.count("\n") == 1
    assert "not a vmanager template" in r.stderr
    r = vm("define", name, "--guest", "tiny", "--template", str(tmp_path / "bad"),
           "--template-source")
    assert r.returncode == EXIT_USAGE and "not allowed with" in r.stderr
    # what save-template would refuse is refused at define
    r = vm("define", name, "--guest", "tiny", "--template-source", "--nics", "1")
    assert r.returncode == EXIT_CONFIG and "NICs" in r.stderr and r.stderr.count("\n") == 1
    # a clone runs on the template's copy of the disk, never on a new image overlay
    r = vm("define", name, "--guest", "debian-12", "--template", str(tmp_path / "bad"))
    assert r.returncode == EXIT_CONFIG and "leave --guest out" in r.stderr
    r = vm("define", name, "--template", str(tmp_path / "bad"), "--cloud-init", "x.toml")
    assert r.returncode == EXIT_CONFIG and "does not boot" in r.stderr
    assert vm("list").stdout.count(name) == 0  # nothing was defined
    # save-template: a machine without --template-source is refused, and kept running
    ok("define", name, "--guest", "tiny", "--memory", "128")
    ok("start", name)
    r = vm("save-template", name, str(tmp_path / "never"))
    assert r.returncode == EXIT_CONFIG and "template_source" in r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "never").exists()
    assert {r["name"]: r for r in js("list")}[name]["state"] == "running"
    r = vm("save-template", unique_name("no"), str(tmp_path / "never"))
    assert r.returncode == EXIT_NOT_FOUND
