"""QEMU's argv from a machine definition: pure, so every device combination is checked here."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from vmanager.qemu import cmdline
from vmanager.qemu.blockdev import Layer
from vmanager.qemu.cmdline import CdSpec, DiskSpec, MachineSpec, NicSpec, Sockets

SOCKETS = Sockets(qmp_fd=3, serial_fd=4, shell_fd=5, serial_log="/run/m/serial0.log",
                  pidfile="/run/m/qemu.pid")
BASE = MachineSpec(qemu="/usr/bin/qemu-system-x86_64", name="m1", accel="tcg", sockets=SOCKETS)


def _opt(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _blockdevs(argv: list[str]) -> list[dict[str, object]]:
    return [json.loads(v) for v in _opt(argv, "-blockdev")]


def test_minimal_machine_has_sockets_consoles_display_and_memory() -> None:
    argv = cmdline.build(BASE)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert _opt(argv, "-machine") == ["pc,accel=tcg"]
    assert _opt(argv, "-cpu") == ["max"]
    assert _opt(argv, "-m") == ["256", "slots=8,maxmem=256M"]
    assert "-nodefaults" in argv and "-no-user-config" in argv
    assert _opt(argv, "-pidfile") == ["/run/m/qemu.pid"]
    chardevs = _opt(argv, "-chardev")
    assert chardevs[0] == "socket,id=qmp,fd=3,server=on,wait=off"
    assert chardevs[1].startswith("socket,id=serial0,fd=4,server=on,wait=on,")
    assert "logfile=/run/m/serial0.log" in chardevs[1]
    assert chardevs[2] == "socket,id=shell,fd=5,server=on,wait=on"
    devices = _opt(argv, "-device")
    assert devices == ["virtio-serial-pci,id=vser0",
                       "virtserialport,chardev=shell,name=vmanager.shell,id=shell0",
                       "virtio-tablet-pci,id=vm-tablet",
                       "virtio-balloon-pci,id=balloon0,free-page-reporting=on"]
    assert _opt(argv, "-vnc") == ["none"] and _opt(argv, "-display") == ["none"]
    # no TCP listener, no kernel, no NIC, no incoming unless asked for
    assert not any("host=" in a for a in argv)
    for flag in ("-kernel", "-netdev", "-incoming", "-blockdev"):
        assert flag not in argv


def test_the_serial_log_goes_to_the_keepers_pipe_through_an_fd_set() -> None:
    argv = cmdline.build(replace(BASE, sockets=replace(SOCKETS, serial_log_fd=7)))
    assert _opt(argv, "-add-fd") == ["fd=7,set=1,opaque=serial-log"]
    serial = _opt(argv, "-chardev")[1]
    assert "logfile=/dev/fdset/1,logappend=on" in serial and "serial0.log" not in serial


def test_build_is_pure() -> None:
    assert cmdline.build(BASE) == cmdline.build(BASE)


def test_kvm_uses_the_host_cpu_unless_a_model_is_given() -> None:
    assert _opt(cmdline.build(replace(BASE, accel="kvm")), "-cpu") == ["host"]
    assert _opt(cmdline.build(replace(BASE, accel="kvm", cpu_model="Haswell")),
                "-cpu") == ["Haswell"]
    assert _opt(cmdline.build(replace(BASE, machine_type="q35", cpus=4)), "-smp") == ["4"]


def test_tcg_translation_buffer_goes_to_the_accelerator_object() -> None:
    argv = cmdline.build(replace(BASE, tcg_tb_size=16))
    assert _opt(argv, "-machine") == ["pc"]
    assert _opt(argv, "-accel") == ["tcg,tb-size=16"]
    # under KVM there is no translation buffer: the option is left out
    argv = cmdline.build(replace(BASE, accel="kvm", tcg_tb_size=16))
    assert _opt(argv, "-machine") == ["pc,accel=kvm"] and "-accel" not in argv


def test_monitor_port_listens_on_loopback_only() -> None:
    argv = cmdline.build(replace(BASE, monitor_port=4444))
    assert "socket,id=hmp,host=127.0.0.1,port=4444,server=on,wait=off" in argv
    assert "chardev=hmp,mode=readline" in argv


def test_direct_kernel_boot() -> None:
    argv = cmdline.build(replace(BASE, kernel="/k", initrd="/i", append="console=ttyS0"))
    assert _opt(argv, "-kernel") == ["/k"] and _opt(argv, "-initrd") == ["/i"]
    assert _opt(argv, "-append") == ["console=ttyS0"]
    assert "-append" not in cmdline.build(replace(BASE, kernel="/k", append=""))


@pytest.mark.parametrize(("vga", "tablet", "devices"), [
    ("std", "virtio", ["virtio-tablet-pci,id=vm-tablet"]),
    ("virtio", "usb", ["qemu-xhci,id=vm-xhci", "usb-tablet,id=vm-tablet,bus=vm-xhci.0"]),
    ("none", None, []),
])
def test_display_and_tablet(vga: str, tablet: str | None, devices: list[str]) -> None:
    argv = cmdline.build(replace(BASE, vga=vga, tablet=tablet))
    assert _opt(argv, "-vga") == [vga]
    assert [d for d in _opt(argv, "-device") if "tablet" in d or "xhci" in d] == devices


def test_disks_get_their_ids_interfaces_and_boot_order() -> None:
    disks = (DiskSpec((Layer("/d/a.qcow2", "qcow2"),), bootindex=2),
             DiskSpec((Layer("/d/b.raw", "raw"),), interface="ide", readonly=True),
             DiskSpec((Layer("/d/c.qcow2", "qcow2"),), interface="scsi", bootindex=1))
    argv = cmdline.build(replace(BASE, disks=disks))
    devices = _opt(argv, "-device")
    assert "virtio-blk-pci,drive=disk0,id=disk0,bootindex=2" in devices
    assert "ide-hd,drive=disk1,id=disk1" in devices
    assert devices.index("virtio-scsi-pci,id=disk2-scsi") < devices.index(
        "scsi-hd,drive=disk2,id=disk2,bus=disk2-scsi.0,bootindex=1")
    nodes = {b["node-name"]: b for b in _blockdevs(argv)}
    assert nodes["disk0"]["driver"] == "qcow2" and nodes["disk0"]["read-only"] is False
    assert nodes["disk0-file"]["filename"] == "/d/a.qcow2"
    assert nodes["disk1"]["driver"] == "raw" and nodes["disk1"]["read-only"] is True
    assert nodes["disk1-file"]["read-only"] is True


def test_backing_chain_is_wired_explicitly_and_read_only_below_the_top() -> None:
    chain = (Layer("/d/top.qcow2", "qcow2"), Layer("/d/mid.qcow2", "qcow2"),
             Layer("/d/base.raw", "raw"))
    blockdevs = _blockdevs(cmdline.build(replace(BASE, disks=(DiskSpec(chain),))))
    nodes = {b["node-name"]: b for b in blockdevs}
    assert nodes["disk0"]["backing"] == "disk0-b1"
    assert nodes["disk0-b1"]["backing"] == "disk0-b2"
    assert "backing" not in nodes["disk0-b2"]  # raw has no backing option
    assert nodes["disk0-b1-file"]["filename"] == "/d/mid.qcow2"
    assert [nodes[n]["read-only"] for n in ("disk0", "disk0-b1", "disk0-b2")] == \
        [False, True, True]
    # a node is defined before anything refers to it
    order = [b["node-name"] for b in blockdevs]
    assert order.index("disk0-b2") < order.index("disk0-b1") < order.index("disk0")


@pytest.mark.parametrize(("interface", "device"), [
    ("ide", "ide-cd,drive=cd0,id=cd0,bootindex=1"),
    ("scsi", "scsi-cd,drive=cd0,id=cd0,bus=cd0-scsi.0,bootindex=1"),
])
def test_cd_drive(interface: str, device: str) -> None:
    argv = cmdline.build(replace(BASE, cd=CdSpec("/iso/x.iso", interface=interface,
                                                 bootindex=1)))
    assert device in _opt(argv, "-device")
    nodes = {b["node-name"]: b for b in _blockdevs(argv)}
    assert nodes["cd0"]["read-only"] is True and nodes["cd0-file"]["filename"] == "/iso/x.iso"


def test_disks_and_cd_together_keep_separate_ids() -> None:
    argv = cmdline.build(replace(BASE, disks=(DiskSpec((Layer("/a", "qcow2"),)),),
                                 cd=CdSpec("/x.iso")))
    assert {b["node-name"] for b in _blockdevs(argv)} == {"disk0", "disk0-file", "cd0",
                                                         "cd0-file"}


def test_memory_hotplug_room_balloon_and_incoming() -> None:
    argv = cmdline.build(replace(BASE, memory=512, memory_slots=4, max_memory=2048,
                                 balloon=False, incoming=True))
    assert _opt(argv, "-m") == ["512", "slots=4,maxmem=2048M"]
    assert not any("balloon" in d for d in _opt(argv, "-device"))
    assert _opt(argv, "-incoming") == ["defer"]


def test_nics_keep_their_indices_models_and_macs() -> None:
    nics = (NicSpec(0, 10, "virtio-net-pci", "52:54:00:00:00:01"),
            NicSpec(2, 11, "e1000", "52:54:00:00:00:02"))
    argv = cmdline.build(replace(BASE, nics=nics))
    assert _opt(argv, "-netdev") == ["tap,id=net0,fd=10", "tap,id=net2,fd=11"]
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,id=nic0" in argv
    assert "e1000,netdev=net2,mac=52:54:00:00:00:02,id=nic2" in argv


def test_virtio_nics_tell_the_guest_their_mtu() -> None:
    argv = cmdline.build(replace(BASE, nics=(
        NicSpec(0, 10, "virtio-net-pci", "52:54:00:00:00:01", mtu=9000),
        NicSpec(1, 11, "e1000", "52:54:00:00:00:02", mtu=9000))))
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,id=nic0,host_mtu=9000" in argv
    assert "e1000,netdev=net1,mac=52:54:00:00:00:02,id=nic1" in argv  # no host_mtu


def test_extra_args_come_last() -> None:
    argv = cmdline.build(replace(BASE, nics=(NicSpec(0, 9, "virtio-net-pci",
                                                     "52:54:00:00:00:01"),),
                                 extra_args=("-device", "virtio-rng-pci")))
    assert argv[-2:] == ["-device", "virtio-rng-pci"]


def test_everything_at_once_in_a_fixed_order() -> None:
    spec = replace(BASE, monitor_port=5555, kernel="/k", vga="virtio",
                   disks=(DiskSpec((Layer("/a", "qcow2"),)),), cd=CdSpec("/x.iso"),
                   nics=(NicSpec(0, 9, "virtio-net-pci", "52:54:00:00:00:01"),),
                   incoming=True, extra_args=("-S",))
    argv = cmdline.build(spec)
    flags = [a for a in argv if a in ("-mon", "-kernel", "-vga", "-blockdev", "-incoming",
                                      "-netdev", "-S")]
    first = {f: flags.index(f) for f in reversed(flags)}
    assert first["-mon"] < first["-kernel"] < first["-vga"] < first["-blockdev"] \
        < first["-incoming"] < first["-netdev"] < first["-S"]


def test_ids_round_trip() -> None:
    assert (cmdline.nic_id(3), cmdline.netdev_id(3)) == ("nic3", "net3")
    assert cmdline.nic_index("nic12") == 12 and cmdline.nic_index("nicx") is None
    assert cmdline.nic_index("disk1") is None
    assert cmdline.dimm_ids(2) == ("mem-hp2", "dimm-hp2")
    assert cmdline.dimm_number("dimm-hp7") == 7 and cmdline.dimm_number("dimm0") is None
    assert (cmdline.disk_id(1), cmdline.cd_id(0)) == ("disk1", "cd0")
    assert cmdline.cd_medium_node(4) == "cd0-m4"
    with pytest.raises(ValueError):
        cmdline.disk_id(-1)


def test_guest_agent_port_on_the_virtio_serial_bus() -> None:
    argv = cmdline.build(replace(BASE, agent_fd=9))
    assert "socket,id=qga0,fd=9,server=on,wait=off" in _opt(argv, "-chardev")
    assert ("virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0,"
            "id=qga0-port") in _opt(argv, "-device")
    assert not any("qga0" in a for a in cmdline.build(BASE))


@pytest.mark.parametrize("shared", [True, False])
def test_ram_in_a_file_is_a_json_memory_backend_the_machine_uses(shared: bool) -> None:
    path = "/srv/t,1/ram"  # a comma would need escaping in QEMU's key=value syntax
    for spec in (replace(BASE, ram_file=path, ram_shared=shared, memory=128),
                 replace(BASE, ram_file=path, ram_shared=shared, memory=128, tcg_tb_size=16)):
        argv = cmdline.build(spec)
        assert _opt(argv, "-machine")[0].endswith(",memory-backend=vm.ram")
        backends = [json.loads(v) for v in _opt(argv, "-object")]
        assert backends == [{"qom-type": "memory-backend-file", "id": "vm.ram",
                             "size": 128 << 20, "mem-path": path, "share": shared}]
    plain = cmdline.build(BASE)
    assert "-object" not in plain and "memory-backend" not in " ".join(plain)


def test_template_part_gives_file_ram_and_no_balloon(tmp_path: object) -> None:
    from pathlib import Path

    from vmanager.machine.template import Templating

    class View:
        name = "src"
        run_dir = Path("/run/vmanager/machines/src")

    part = Templating(View(), source=True, template=None, memory=256)  # type: ignore[arg-type]
    spec = part.contribute(BASE)
    assert spec.ram_file == "/run/vmanager/machines/src/ram" and spec.ram_shared
    assert not spec.balloon
    assert not any(a.startswith("virtio-balloon") for a in cmdline.build(spec))
    assert Templating(View(), source=False, template=None,  # type: ignore[arg-type]
                      memory=256).contribute(BASE) == BASE
