"""A Machine's definition -> MachineSpec -> argv, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmanager import CD, Machine
from vmanager.errors import ConfigError, NotFoundError, StateError
from vmanager.machine.part import Launch
from vmanager.qemu import cmdline


def _argv(m: Machine, tmp_path: Path) -> list[str]:
    launch = Launch(run_dir=tmp_path / "run", accel="tcg", pass_fds=[3, 4, 5])
    return cmdline.build(m.spec(launch, qemu="/usr/bin/qemu-system-x86_64"))


def test_every_part_fills_in_its_fields_and_nothing_is_made(tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"\0" * 2048)
    m = Machine("specm", cd=CD(iso), memory=512, cpus=2, nics=2, machine_type="q35")
    m.configure_screen(vga="virtio", tablet="usb")
    m.max_memory, m.memory_slots = 2048, 4
    assert m.change_boot_device("cd") == ["cd0", "nic0", "nic1"]
    argv = _argv(m, tmp_path)
    assert argv[argv.index("-m") + 1] == "512" and "slots=4,maxmem=2048M" in argv
    assert argv[argv.index("-smp") + 1] == "2" and "q35,accel=tcg" in argv
    assert argv[argv.index("-vga") + 1] == "virtio"
    assert "usb-tablet,id=vm-tablet,bus=vm-xhci.0" in argv
    assert "ide-cd,drive=cd0,id=cd0,bootindex=1" in argv
    assert argv == _argv(m, tmp_path)  # the same definition, the same argv
    # NICs come from prepare (their tap fds), which a spec alone never runs
    assert "-netdev" not in argv
    assert not (tmp_path / "run").exists() and m.state.value == "defined"


def test_definition_round_trips_what_a_record_needs(tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"\0" * 2048)
    m = Machine("specd", cd=CD(iso), memory="1G", nics=3, extra_args=["-S"])
    d = m.definition()
    assert (d["memory"], d["nics"], d["cd"], d["extra_args"]) == (1024, 3, str(iso), ["-S"])


def test_bad_arguments_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cpus"):
        Machine("specx", cpus=0)
    with pytest.raises(ConfigError, match="monitor_port"):
        Machine("specx", monitor_port=70000)
    with pytest.raises(ConfigError, match="initrd was given without kernel"):
        Machine("specx", initrd=__file__)
    with pytest.raises(NotFoundError, match="kernel"):
        Machine("specx", kernel=tmp_path / "nope")
    with pytest.raises(StateError, match="boots its kernel directly"):
        Machine("specx", kernel=__file__).change_boot_device("cd")
