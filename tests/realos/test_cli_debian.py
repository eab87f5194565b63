"""The command line, as a user runs it: define a Debian machine with a cloud-init file,
start it, run commands through its guest agent, stop and undefine it.

This is the path labs take too (a definition with ``guest = "debian-12"`` and a
``cloud_init`` table becomes an overlay of the cached image plus a seed CD).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmanager import images, paths
from vmcli import js, ok, vm
from vmtest_util import unique_name

pytestmark = pytest.mark.guest


def test_define_start_exec_stop_a_debian_machine(debian_image: images.Image,
                                                 tmp_path: Path) -> None:
    name = unique_name("dc")
    seed = tmp_path / "seed.toml"
    seed.write_text('hostname = "clideb"\nusers = ["bob"]\n'
                    'runcmd = ["echo from-the-seed > /var/tmp/seeded"]\n')
    ok("define", name, "--guest", "debian-12", "--memory", "1024", "--cloud-init", str(seed))
    overlay = paths.state_dir() / "disks" / f"{name}-debian-12.qcow2"
    try:
        ok("start", name, "--wait-ready", "--timeout", "600", timeout=700)
        assert ok("exec", "--timeout", "600", name, "--", "cloud-init status --wait",
                  timeout=700).strip().endswith("done")
        out = ok("exec", name, "--", "hostname; id -un bob; cat /var/tmp/seeded")
        assert out.split() == ["clideb", "bob", "from-the-seed"], out
        r = vm("exec", name, "--", "exit 3")
        assert r.returncode == 3, r.stderr
        # the machine's own overlay on the cached image carries its changes
        assert overlay.is_file()
        (record,) = [m for m in js("list") if m["name"] == name]
        assert record["state"] == "running"
    finally:
        vm("stop", name, timeout=120)
        undefined = vm("undefine", name)
    assert undefined.returncode == 0, undefined.stderr
    assert not [m for m in js("list") if m["name"] == name]
    assert not overlay.exists(), "undefine left the disk vmanager made for the machine"


def test_a_bad_cloud_init_file_names_the_field(tmp_path: Path) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text('hostname = "x"\nuser = ["typo"]\n')
    r = vm("define", unique_name("dc"), "--guest", "debian-12", "--cloud-init", str(seed))
    assert r.returncode != 0 and "user" in r.stderr and "unknown" in r.stderr, r.stderr
    seed.write_text("hostname = \n")
    r = vm("define", unique_name("dc"), "--guest", "debian-12", "--cloud-init", str(seed))
    assert r.returncode != 0 and "not valid TOML" in r.stderr, r.stderr
