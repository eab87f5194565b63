"""Templates: clones map one saved guest's RAM copy-on-write and resume its guest.

One template is saved per module from a booted tiny guest that wrote a marker
file before the save; the clones prove in the guest that they resume that
guest (the marker, the source's host name), that what one clone writes stays
its own, and on the host that the template's RAM file is mapped (not copied)
and never written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from vmanager import Machine
from vmanager.errors import ConfigError, NotFoundError, StateError
from vmanager.guests.tiny import TinyGuest
from vmtest_util import unique_name

pytestmark = pytest.mark.guest


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(scope="module")
def template(tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A template saved from a booted tiny guest that wrote /root/marker."""
    directory = tmp_path_factory.mktemp("tmpl") / "t"
    name = unique_name("src")
    source = Machine(name, **tiny.machine_args(name), memory=256, template_source=True)
    try:
        source.start_vm()
        source.wait_ready(120)
        source.succeed("echo from-the-template > /root/marker")
        ram = source.run_dir / "ram"
        assert f"mem-path={ram}" not in " ".join(source.argv)  # given as JSON
        assert any(json.loads(a).get("mem-path") == str(ram) and json.loads(a)["share"]
                   for a in source.argv if a.startswith("{"))
        assert not any(a.startswith("virtio-balloon") for a in source.argv)
        info = source.save_template(directory)
        assert info.source == name and info.memory == 256
        # the source's run ended: its QEMU is gone and its run directory removed
        assert source.pid is None and not source.run_dir.exists()
    finally:
        source.kill()
    yield directory


def _clone(tiny: TinyGuest, template: Path, **kwargs: Any) -> Machine:
    name = unique_name("cl")
    return Machine(name, **{**tiny.machine_args(name), "memory": 256, "template": template,
                            **kwargs})


def test_clones_resume_the_template_guest_and_keep_their_writes(
        tiny: TinyGuest, template: Path) -> None:
    files = sorted(p.name for p in template.iterdir())
    assert files == ["ram", "state", "template.json"]
    assert (template / "ram").stat().st_mode & 0o077 == 0
    before = _sha256(template / "ram")
    with _clone(tiny, template) as a, _clone(tiny, template) as b:
        a.start_vm()
        b.start_vm()
        # no boot: the guest answers at once, with the template guest's memory
        assert a.succeed("cat /root/marker", timeout=20).strip() == "from-the-template"
        assert b.succeed("cat /root/marker", timeout=20).strip() == "from-the-template"
        a.succeed("echo only-a > /root/marker; dd if=/dev/urandom of=/root/big bs=1M count=8")
        assert a.succeed("cat /root/marker").strip() == "only-a"
        assert b.succeed("cat /root/marker").strip() == "from-the-template"
        assert b.execute("ls /root/big").status != 0
        # on the host: each QEMU maps the template's RAM file, copy-on-write
        for m in (a, b):
            assert m.pid is not None
            maps = Path(f"/proc/{m.pid}/maps").read_text()
            assert str((template / "ram").resolve()) in maps
            assert any(json.loads(x).get("share") is False for x in m.argv if x.startswith("{"))
    # what the clones wrote never reached the template
    assert _sha256(template / "ram") == before


def test_a_clone_gets_its_own_nics_hot_plugged(tiny: TinyGuest, template: Path) -> None:
    with _clone(tiny, template, nics=1) as m:
        m.start_vm()
        nic = m.nics[0]
        mac = m.succeed("i=0; while ! [ -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do "
                        "sleep 0.1; i=$((i+1)); done; cat /sys/class/net/eth0/address",
                        timeout=60).strip()
        assert mac == nic.mac  # the clone's own stable MAC, not one from the template
        with NetNS(m.name) as ns:  # QEMU's macvtap lives in the clone's own namespace
            assert ns.link_lookup(ifname=nic.device)
        assert "-netdev" not in m.argv  # plugged after the state loaded, not at launch


def test_a_clone_with_other_devices_is_refused_before_anything_loads(
        tiny: TinyGuest, template: Path) -> None:
    m = _clone(tiny, template, guest_agent=False)
    with pytest.raises(ConfigError, match="qga0-port"):
        m.start_vm()
    assert m.pid is None and not m.run_dir.exists()


def test_bad_templates_and_sources_get_clear_errors(
        tiny: TinyGuest, template: Path, tmp_path: Path, make_machine: Any) -> None:
    with pytest.raises(NotFoundError, match=r"template\.json"):
        _clone(tiny, tmp_path)
    with pytest.raises(ConfigError, match="512 MiB"):
        _clone(tiny, template, memory=512)
    with pytest.raises(ConfigError, match="both"):
        Machine("x", memory=256, template_source=True, template=template)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("ram", "state"):
        (broken / name).write_bytes(b"")
    for manifest in (b"\xff\xfe", b"[]", b'{"format": 1, "memory": true}', b"{" * 100_000):
        (broken / "template.json").write_bytes(manifest)
        with pytest.raises(ConfigError, match="not a vmanager template"):
            _clone(tiny, broken)
    # a machine that keeps RAM in anonymous memory cannot become a template
    m = make_machine()
    with pytest.raises(StateError):
        m.save_template(tmp_path / "never")
    m.start_vm()
    with pytest.raises(ConfigError, match="template_source=True"):
        m.save_template(tmp_path / "never")
    assert not (tmp_path / "never").exists()
    m.kill()
    # a source with a NIC is refused, and an existing directory is never adopted
    src = make_machine(template_source=True, nics=1)
    src.start_vm()
    with pytest.raises(ConfigError, match="NIC"):
        src.save_template(tmp_path / "never")
    assert not (tmp_path / "never").exists()
    src.kill()
    src = make_machine(template_source=True)
    src.start_vm()
    with pytest.raises(ConfigError, match="exists already"):
        src.save_template(broken)
    assert (broken / "template.json").read_bytes() == b"{" * 100_000
    assert src.is_alive()
    src.kill()


def test_the_template_file_of_another_user_is_refused(tiny: TinyGuest, template: Path,
                                                      tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    other = tmp_path / "other"
    other.mkdir()
    for p in template.iterdir():
        (other / p.name).symlink_to(p) if p.name == "ram" else \
            (other / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ConfigError, match="not a regular file"):
        _clone(tiny, other)
    (other / "ram").unlink()
    (other / "ram").write_bytes(b"")
    os.chown(other / "state", 65534, 65534)
    with pytest.raises(ConfigError, match="uid 65534"):
        _clone(tiny, other)


def test_a_clone_whose_state_does_not_load_leaves_nothing(tiny: TinyGuest, template: Path,
                                                          tmp_path: Path) -> None:
    from vmanager.errors import QemuError
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in template.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    state = (bad / "state").read_bytes()
    (bad / "state").write_bytes(state[:len(state) // 2])  # cut short
    m = _clone(tiny, bad)
    with pytest.raises(QemuError, match="restoring state"):
        m.start_vm()
    assert m.pid is None and not m.run_dir.exists()


def _read_disk(m: Machine, length: int) -> str:
    """What the clone's disk holds: read past the guest's own cache."""
    return m.succeed(f"echo 3 > /proc/sys/vm/drop_caches; head -c {length} /dev/vda",
                     timeout=30)


def test_a_template_copies_writable_disks_and_clones_run_on_overlays(
        tiny: TinyGuest, tmp_path: Path) -> None:
    from vmanager import Harddrive
    from vmanager.storage import qemu_img
    own = tmp_path / "source.qcow2"
    disk = Harddrive(own, size="16M")
    disk.create()
    name = unique_name("dsrc")
    with Machine(name, **tiny.machine_args(name), memory=256, template_source=True,
                 harddrives=disk) as source:
        source.start_vm()
        source.wait_ready(120)
        source.succeed("printf template-disk | dd of=/dev/vda conv=fsync 2>/dev/null")
        source.save_template(tmp_path / "t")
    copy = tmp_path / "t" / "disk0.qcow2"
    info = qemu_img.run_json(["info", "--output=json", "-U", str(copy)])
    assert info["format"] == "qcow2" and "backing-filename" not in info  # flattened
    before, source_disk = _sha256(copy), _sha256(own)
    with _clone(tiny, tmp_path / "t") as a, _clone(tiny, tmp_path / "t") as b:
        a.start_vm()
        b.start_vm()
        overlay = a.run_dir / "disk0.qcow2"
        chain = qemu_img.run_json(["info", "--output=json", "-U", str(overlay)])
        assert chain["full-backing-filename"] == str(copy)
        assert _read_disk(a, 13) == "template-disk"
        a.succeed("printf clone-a-disk! | dd of=/dev/vda conv=fsync 2>/dev/null")
        assert _read_disk(a, 13) == "clone-a-disk!"
        assert _read_disk(b, 13) == "template-disk"
    assert not overlay.exists()  # a clone's overlay goes with its run
    assert _sha256(copy) == before and _sha256(own) == source_disk


def test_a_clone_without_a_cd_gets_an_empty_drive_where_its_template_had_one(
        tiny: TinyGuest, tmp_path: Path) -> None:
    """A real OS's source boots with a cloud-init seed CD; its clones need no seed."""
    from vmanager import CloudInit
    name = unique_name("csrc")
    with Machine(name, **tiny.machine_args(name), memory=256, template_source=True,
                 cloud_init=CloudInit(hostname="seeded")) as source:
        source.start_vm()
        source.wait_ready(120)
        source.save_template(tmp_path / "t")
    with _clone(tiny, tmp_path / "t") as m:
        m.start_vm()
        assert m.succeed("echo up").strip() == "up"
        drives = {b.get("qdev", ""): b for b in m.qmp("query-block")}
        cd = [b for q, b in drives.items() if "cd0" in q]
        assert len(cd) == 1 and "inserted" not in cd[0]  # the drive, with no medium
        assert m.cdrom.drive
