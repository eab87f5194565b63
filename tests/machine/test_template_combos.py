"""Templates with other machines: UEFI, microvm, several CPUs, DIMMs, and a clone's verbs.

What a clone cannot be (other CPUs, machine type or firmware than its source; a
microvm with NICs) is refused before anything starts; what a source cannot
hold (hot-plugged DIMMs) is refused before anything is saved. What a clone can
do (snapshots, save_state, migrate, stop and start, attach) is proved in its
guest: the marker file and the disk it wrote come back as they were.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import Harddrive, Machine
from vmanager.errors import ConfigError, HostError, NotFoundError
from vmanager.guests.tiny import TinyGuest
from vmanager.qemu import firmware
from vmtest_util import unique_name

pytestmark = pytest.mark.guest

try:
    OVMF: firmware.UefiFirmware | None = firmware.find_uefi()
except HostError:
    OVMF = None


def _save(tmp: Path, tiny: TinyGuest, *, machine_type: str = "pc", disk: Harddrive | None = None,
          **kwargs: Any) -> Path:
    """A template of a booted tiny guest that wrote /root/marker (and 'TMPL' on its disk)."""
    name = unique_name("src")
    directory = tmp / name
    with Machine(name, **tiny.machine_args(name, machine_type=machine_type), memory=256,
                 template_source=True, harddrives=disk, **kwargs) as source:
        source.start_vm()
        source.wait_ready(120)
        source.succeed("echo template > /root/marker")
        if disk is not None:
            _write_disk(source, "TMPL")
        source.save_template(directory)
    return directory


def _clone(tiny: TinyGuest, template: Path, *, machine_type: str = "pc",
           **kwargs: Any) -> Machine:
    name = unique_name("cl")
    return Machine(name, **{**tiny.machine_args(name, machine_type=machine_type),
                            "memory": 256, "template": template, **kwargs})


def _write_disk(m: Machine, text: str) -> None:
    m.succeed(f"printf {text} | dd of=/dev/vda conv=fsync 2>/dev/null")


def _disk(m: Machine) -> str:
    return m.succeed("echo 3 > /proc/sys/vm/drop_caches; head -c 4 /dev/vda", timeout=30)


def _marker(m: Machine) -> str:
    return m.succeed("cat /root/marker", timeout=30).strip()


def _refused_before_start(m: Machine, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        m.start_vm()
    assert m.pid is None and not m.run_dir.exists()


@pytest.fixture(scope="module")
def disk_template(tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("tdisk")
    disk = Harddrive(tmp / "source.qcow2", size="16M")
    disk.create()
    yield _save(tmp, tiny, disk=disk)


def test_a_clone_needs_its_sources_cpus_machine_type_and_cpu_model(
        tiny: TinyGuest, tmp_path: Path) -> None:
    template = _save(tmp_path, tiny, cpus=2)
    with _clone(tiny, template, cpus=2) as m:
        m.start_vm()
        assert m.succeed("nproc").strip() == "2" and _marker(m) == "template"
    # each would fail in QEMU only once loading ("Unknown savevm section 'cpu_common' 1")
    _refused_before_start(_clone(tiny, template, cpus=1), r"cpus 1 \(the template's: 2\)")
    _refused_before_start(_clone(tiny, template, cpus=2, cpu_model="max"), "cpu_model 'max'")
    _refused_before_start(_clone(tiny, template, cpus=2, machine_type="microvm"),
                          "machine 'microvm'")
    clone = _clone(tiny, template, cpus=2)
    clone.memory_slots = 2  # else: "Missing section footer for 0000:00:01.3/piix4_pm"
    _refused_before_start(clone, r"memory_slots 2 \(the template's: 8\)")


@pytest.mark.parametrize("machine_type", ["microvm", "q35"])
def test_microvm_and_q35_templates_make_clones_without_nics(
        tiny: TinyGuest, tmp_path: Path, machine_type: str) -> None:
    template = _save(tmp_path, tiny, machine_type=machine_type)
    with _clone(tiny, template, machine_type=machine_type) as m:
        m.start_vm()
        assert _marker(m) == "template"
    # NICs are hot-plugged after the state loads: neither has a bus that takes them
    _refused_before_start(_clone(tiny, template, machine_type=machine_type, nics=1),
                          "no bus to hot-plug them into")


def test_a_source_with_a_hot_plugged_dimm_is_refused_and_clones_may_plug_one(
        tiny: TinyGuest, tmp_path: Path) -> None:
    name = unique_name("src")
    with Machine(name, **tiny.machine_args(name), memory=256, template_source=True) as source:
        source.start_vm()
        source.wait_ready(120)
        source.increase_ram(128)
        with pytest.raises(ConfigError, match="hot-plugged memory"):
            source.save_template(tmp_path / "t")
        assert not (tmp_path / "t").exists() and source.status() == "running"
    template = _save(tmp_path, tiny)
    with _clone(tiny, template) as m:
        m.start_vm()
        assert m.increase_ram(128).plugged == 128
        with pytest.raises(ConfigError, match="no balloon"):
            m.balloon(128)  # QEMU's own words: "No balloon device has been activated"
        total = int(m.succeed("awk '/MemTotal/ {print $2}' /proc/meminfo")) >> 10
        assert total > 256


def test_a_clone_snapshot_covers_its_template_disk_also_after_attach(
        tiny: TinyGuest, disk_template: Path) -> None:
    m = _clone(tiny, disk_template)
    try:
        m.start_vm()
        assert _disk(m) == "TMPL"
        m.succeed("echo one > /root/marker")
        _write_disk(m, "ONE.")
        m.snapshot("s1")
        m.succeed("echo two > /root/marker")
        _write_disk(m, "TWO.")
        m.load_snapshot("s1")
        assert _marker(m) == "one" and _disk(m) == "ONE."
        assert not m.snapshots.state_disk.exists()  # the state went into the overlay
        with pytest.raises(ConfigError, match="no harddrives to resize"):
            m.resize_harddrive(0, "32M")
        m.detach()
        again = Machine.attach(m.name)
        again.load_snapshot("s1")
        assert _marker(again) == "one" and _disk(again) == "ONE."
        assert again.template.runtime()["template"] == str(disk_template)
        # its overlay goes when it stops: saving or moving its state would lose its disk
        with pytest.raises(ConfigError, match="overlays of its template's disks"):
            again.save_state(disk_template.parent / "never")
        assert again.status() == "running"
        again.stop()
    finally:
        m.kill()
        if m.run_dir.exists():
            Machine.attach(m.name).kill()


def test_a_clone_saves_restores_migrates_and_restarts_from_its_template(
        tiny: TinyGuest, tmp_path: Path) -> None:
    template = _save(tmp_path, tiny)
    a = _clone(tiny, template, nics=1)
    b: Machine | None = None
    try:
        a.start_vm()
        mac = a.nics[0].mac
        a.succeed("echo saved > /root/marker")
        a.save_state(tmp_path / "state")  # a clone's RAM is its own: all of it is saved
        a.restore_state(tmp_path / "state")
        assert _marker(a) == "saved"
        assert a.succeed("cat /sys/class/net/eth0/address").strip() == mac
        b = _clone(tiny, template, nics=a.nics)
        a.migrate(b)
        assert _marker(b) == "saved" and not a.is_alive()
        assert b.succeed("cat /sys/class/net/eth0/address").strip() == mac
        b.kill()
        a.start_vm()  # a new start resumes the template again
        assert _marker(a) == "template"
        assert a.shutdown(timeout=60) == 0
    finally:
        a.kill()
        if b is not None:
            b.kill()


@pytest.mark.skipif(OVMF is None, reason="OVMF is not installed (apt-get install ovmf)")
def test_uefi_clones_get_their_templates_variables_and_bios_clones_are_refused(
        tmp_path: Path) -> None:
    """No guest OS: OVMF itself is the guest (it writes its variables, then idles)."""
    assert OVMF is not None
    name = unique_name("efi")
    with Machine(name, firmware="uefi", memory=256, template_source=True) as source:
        source.start_vm()
        source.console.wait_for("BdsDxe", timeout=180)
        store = source.flash.vars
        assert store is not None
        deadline = time.monotonic() + 30
        while store.read_bytes() == OVMF.vars_template.read_bytes():
            assert time.monotonic() < deadline, "OVMF never wrote its variables"
            time.sleep(0.2)
        source.freeze()  # its variables as saved (the clones start frozen too)
        saved = store.read_bytes()
        source.save_template(tmp_path / "t")
    # a clone's nvram= file takes the template's variables: they are the guest's memory
    nvram = tmp_path / "clone_VARS.fd"
    with Machine(unique_name("efi"), firmware="uefi", memory=256, template=tmp_path / "t",
                 nvram=nvram) as m:
        m.start_vm()
        assert m.status() == "paused" and nvram.read_bytes() == OVMF.vars_template.read_bytes()
        m.unfreeze()  # QEMU writes the flash it loaded to the clone's store as it resumes
        deadline = time.monotonic() + 30
        while nvram.read_bytes() == OVMF.vars_template.read_bytes():
            assert time.monotonic() < deadline, "the template's variables never reached nvram"
            time.sleep(0.2)
        assert nvram.read_bytes() == saved
    _refused_before_start(Machine(unique_name("efi"), memory=256, template=tmp_path / "t"),
                          "firmware 'bios'")


def test_a_moved_template_is_named_as_missing_and_a_bad_config_refused(
        tiny: TinyGuest, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"directory does not exist \(moved"):
        _clone(tiny, tmp_path / "gone")
    for name in ("ram", "state"):
        (tmp_path / name).write_bytes(b"")
    for config in ('{"cpus": true}', '{"vcpus": 2}', '[]', '{"cpu_model": [1]}'):
        (tmp_path / "template.json").write_text(
            f'{{"format": 1, "memory": 256, "machine_type": "pc", "devices": {{}}, '
            f'"config": {config}}}')
        with pytest.raises(ConfigError, match="not a vmanager template"):
            _clone(tiny, tmp_path)


def test_a_clone_on_its_own_overlay_of_the_template_disk_saves_and_migrates(
        tiny: TinyGuest, disk_template: Path, tmp_path: Path) -> None:
    """What the refusal for template-disk clones points to: a lasting overlay of its own."""
    disk = Harddrive(tmp_path / "own.qcow2", backing=disk_template / "disk0.qcow2")
    disk.create()
    a, b = _clone(tiny, disk_template, harddrives=disk), None
    try:
        a.start_vm()
        assert _disk(a) == "TMPL"
        _write_disk(a, "OWN.")
        a.succeed("echo own > /root/marker")
        a.save_state(tmp_path / "state")
        a.restore_state(tmp_path / "state")
        assert _disk(a) == "OWN." and _marker(a) == "own"
        b = _clone(tiny, disk_template, harddrives=disk)
        a.migrate(b)
        assert _disk(b) == "OWN." and _marker(b) == "own"
    finally:
        a.kill()
        if b is not None:
            b.kill()
