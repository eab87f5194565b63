"""machine_type="microvm": the same machine with virtio-mmio devices, or a clear refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmanager.errors import ConfigError
from vmanager.qemu import cmdline, microvm
from vmanager.qemu.blockdev import Layer
from vmanager.qemu.cmdline import CdSpec, DiskSpec, MachineSpec, NicSpec, Sockets

SOCKETS = Sockets(qmp_fd=3, serial_fd=4, shell_fd=5, serial_log="/run/m/serial0.log",
                  pidfile="/run/m/qemu.pid")
BASE = MachineSpec(qemu="qemu-system-x86_64", name="m1", accel="tcg", sockets=SOCKETS,
                   machine_type="microvm", tcg_tb_size=16, kernel="/k", initrd="/i",
                   append="console=ttyS0", agent_fd=6, max_memory=1280)


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_microvm_gets_virtio_mmio_devices_no_vga_and_no_hotplug_room() -> None:
    argv = cmdline.build(BASE)
    assert _opt(argv, "-machine") == ["microvm"]
    assert _opt(argv, "-accel") == ["tcg,tb-size=16"]
    assert _opt(argv, "-device") == [
        "virtio-serial-device,id=vser0",
        "virtserialport,chardev=shell,name=vmanager.shell,id=shell0",
        "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0,id=qga0-port",
        "virtio-tablet-device,id=vm-tablet",
        "virtio-balloon-device,id=balloon0,free-page-reporting=on"]
    assert _opt(argv, "-vga") == ["none"]
    assert _opt(argv, "-m") == ["256"]  # no slots=/maxmem=: microvm has no memory hot-plug
    assert _opt(argv, "-kernel") == ["/k"] and _opt(argv, "-append") == ["console=ttyS0"]


def test_options_of_the_machine_type_are_kept() -> None:
    argv = cmdline.build(replace(BASE, machine_type="microvm,rtc=on", tcg_tb_size=None))
    assert _opt(argv, "-machine") == ["microvm,rtc=on,accel=tcg"]
    assert "virtio-serial-device,id=vser0" in _opt(argv, "-device")


def test_virtio_disks_and_nics_become_mmio_devices() -> None:
    spec = replace(BASE, disks=(DiskSpec((Layer("/d.qcow2", "qcow2"),)),
                                DiskSpec((Layer("/s.raw", "raw"),), interface="scsi")),
                   nics=(NicSpec(0, 9, "virtio-net-pci", "52:54:00:00:00:01", mtu=9000),))
    devices = _opt(cmdline.build(spec), "-device")
    assert "virtio-blk-device,drive=disk0,id=disk0" in devices
    assert "virtio-scsi-device,id=disk1-scsi" in devices
    assert "scsi-hd,drive=disk1,id=disk1,bus=disk1-scsi.0" in devices
    assert "virtio-net-device,netdev=net0,mac=52:54:00:00:00:01,id=nic0,host_mtu=9000" in devices


@pytest.mark.parametrize(("change", "device"), [
    ({"cd": CdSpec("/x.iso")}, "ide-cd"),
    ({"disks": (DiskSpec((Layer("/d.raw", "raw"),), interface="ide"),)}, "ide-hd"),
    ({"nics": (NicSpec(0, 9, "e1000", "52:54:00:00:00:01"),)}, "e1000"),
    ({"tablet": "usb"}, "qemu-xhci"),
])
def test_what_microvm_cannot_have_is_refused_by_name(change: dict[str, object],
                                                     device: str) -> None:
    with pytest.raises(ConfigError, match=f"microvm .*'{device}'"):
        cmdline.build(replace(BASE, **change))  # type: ignore[arg-type]


def test_extra_args_are_left_alone_and_pc_is_unchanged() -> None:
    argv = cmdline.build(replace(BASE, extra_args=("-device", "e1000")))
    assert argv[-2:] == ["-device", "e1000"]
    pc = cmdline.build(replace(BASE, machine_type="pc"))
    assert "virtio-serial-pci,id=vser0" in _opt(pc, "-device") and "-vga" in pc
    assert microvm.is_microvm("microvm,pit=off") and not microvm.is_microvm("pc-microvm")
