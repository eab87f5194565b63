"""A machine's definition -> QEMU's argv, with no side effects; every QEMU id is spelled here.

:func:`build` is a pure function of a frozen :class:`MachineSpec`: it opens no
file, makes no socket and runs nothing, so the argv of every device
combination is unit-tested (``tests/unit/test_cmdline.py``). What needs the
host (listening sockets, tap descriptors, an image's backing chain) is made
before, in the Machine's prepare step, and arrives here as numbers and paths.

Ids a running machine is later addressed by over QMP (``nic{i}``, ``net{i}``,
``disk{i}``, ``cd{i}``, ``dimm-hp{n}``...) come from the functions below, so
the argv and the QMP calls can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from vmanager.qemu import blockdev, microvm
from vmanager.qemu.blockdev import Layer

# -- ids ---------------------------------------------------------------------------------------
QMP_ID = "qmp"
SERIAL_ID = "serial0"
SHELL_ID = "shell"
SHELL_DEVICE = "shell0"
SHELL_PORT_NAME = "vmanager.shell"
VSERIAL_ID = "vser0"
#: the fd set (-add-fd) holding the serial log pipe
SERIAL_LOG_FDSET = 1
#: The virtio-serial bus run-time ports are added to.
VSERIAL_BUS = f"{VSERIAL_ID}.0"
#: The QEMU guest agent's chardev, port device and the port name qemu-ga looks for.
AGENT_ID = "qga0"
AGENT_DEVICE = "qga0-port"
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
BALLOON_ID = "balloon0"
#: the memory backend of guest RAM kept in a file (templates)
RAM_BACKEND_ID = "vm.ram"
TABLET_ID = "vm-tablet"
XHCI_ID = "vm-xhci"
#: The whole-machine snapshot state disk's node (never a guest device).
STATE_NODE = "vmstate"
#: Block nodes of UEFI firmware's flash chips: its code (read-only) and variable store.
FIRMWARE_CODE_NODE = "fw-code"
FIRMWARE_VARS_NODE = "fw-vars"
disk_id = blockdev.disk_id
cd_id = blockdev.cd_id

TABLETS = ("virtio", "usb")
VGA_MODELS = ("std", "virtio", "cirrus", "qxl", "none")


def netdev_id(index: int) -> str:
    """The ``-netdev`` id of NIC ``index``."""
    return f"net{index}"


def nic_id(index: int) -> str:
    """The ``-device`` id of NIC ``index`` (QMP ``set_link``/``device_del`` take it)."""
    return f"nic{index}"


def nic_index(device_id: str) -> int | None:
    """``index`` of an id :func:`nic_id` made, else ``None``."""
    rest = device_id.removeprefix("nic")
    return int(rest) if rest != device_id and rest.isdigit() else None


def dimm_ids(n: int) -> tuple[str, str]:
    """(memory backend id, ``pc-dimm`` device id) of the ``n``-th hot-plugged DIMM."""
    return f"mem-hp{n}", f"dimm-hp{n}"


def dimm_number(device_id: str) -> int | None:
    """``n`` of a device id :func:`dimm_ids` made, else ``None``."""
    rest = device_id.removeprefix("dimm-hp")
    return int(rest) if rest != device_id and rest.isdigit() else None


def chardev_id(n: int) -> str:
    """The ``n``-th chardev added at run time (``vmch{n}``)."""
    return f"vmch{n}"


def port_id(chardev: str) -> str:
    """The ``virtserialport`` device id of a run-time chardev."""
    return f"{chardev}-port"


def cd_medium_node(n: int) -> str:
    """Node name of the ``n``-th medium put into CD drive 0 at run time."""
    return f"{cd_id(0)}-m{n}"


# -- the definition --------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskSpec:
    """A disk as QEMU opens it: its image chain (top first), interface, boot position."""

    layers: tuple[Layer, ...]
    interface: str = "virtio"
    readonly: bool = False
    bootindex: int | None = None


@dataclass(frozen=True)
class CdSpec:
    """The CD drive and the ISO in it (``None``: an empty drive)."""

    path: str | None
    interface: str = "ide"
    bootindex: int | None = None


@dataclass(frozen=True)
class NicSpec:
    """A NIC: QEMU's tap descriptor number, device model and MAC."""

    index: int
    fd: int
    model: str
    mac: str
    #: for virtio-net, the MTU the guest's driver sets (``host_mtu``); ``None``: 1500
    mtu: int | None = None


@dataclass(frozen=True)
class Sockets:
    """Descriptors of the listening sockets QEMU inherits, and its files."""

    qmp_fd: int
    serial_fd: int
    shell_fd: int
    serial_log: str
    pidfile: str
    #: the write end of a pipe to the serial log's keeper; QEMU logs there instead
    #: of opening ``serial_log`` (see :mod:`vmanager.logkeeper`)
    serial_log_fd: int | None = None


@dataclass(frozen=True)
class MachineSpec:
    """Everything :func:`build` needs; parts of the Machine fill in their fields."""

    qemu: str
    name: str
    accel: str
    sockets: Sockets
    memory: int = 256
    cpus: int = 1
    cpu_model: str | None = None
    machine_type: str = "pc"
    #: TCG's translation buffer in MiB (``-accel tcg,tb-size=``); ``None``: QEMU's default
    tcg_tb_size: int | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    monitor_port: int | None = None
    vga: str = "std"
    tablet: str | None = "virtio"
    disks: tuple[DiskSpec, ...] = ()
    cd: CdSpec | None = None
    memory_slots: int = 8
    max_memory: int | None = None
    balloon: bool = True
    #: guest RAM in this file (``memory-backend-file``) instead of anonymous memory
    ram_file: str | None = None
    #: the file is shared (``share=on``: writes reach it) or a private copy-on-write map
    ram_shared: bool = False
    incoming: bool = False
    nics: tuple[NicSpec, ...] = ()
    #: the listening socket of the guest agent's channel, or ``None`` for none
    agent_fd: int | None = None
    #: UEFI firmware: its code and the machine's variable store (both, or neither: SeaBIOS)
    firmware_code: str | None = None
    firmware_vars: str | None = None
    extra_args: tuple[str, ...] = field(default=())


def build(spec: MachineSpec) -> list[str]:
    """QEMU's argv for ``spec`` (pure: the same spec always gives the same list)."""
    s = spec.sockets
    flash, flash_props = firmware_args(spec.firmware_code, spec.firmware_vars)
    if spec.accel == "tcg" and spec.tcg_tb_size is not None:
        # tb-size is an option of the accelerator object, which -machine accel= cannot take
        machine = ["-machine", spec.machine_type + flash_props,
                   "-accel", f"tcg,tb-size={spec.tcg_tb_size}"]
    else:
        machine = ["-machine", f"{spec.machine_type},accel={spec.accel}{flash_props}"]
    if s.serial_log_fd is not None:  # QEMU opens /dev/fdset/N: a dup of the inherited fd
        fdset = ["-add-fd", f"fd={s.serial_log_fd},set={SERIAL_LOG_FDSET},opaque=serial-log"]
        serial_log = f"/dev/fdset/{SERIAL_LOG_FDSET}"
    else:
        fdset, serial_log = [], s.serial_log
    if spec.ram_file is not None:
        machine[1] += f",memory-backend={RAM_BACKEND_ID}"
    argv = [spec.qemu, "-name", f"{spec.name},debug-threads=on", *machine,
            "-cpu", spec.cpu_model or ("host" if spec.accel == "kvm" else "max"),
            "-smp", str(spec.cpus), "-m", str(spec.memory),
            "-nodefaults", "-no-user-config", "-pidfile", s.pidfile, *fdset,
            "-chardev", f"socket,id={QMP_ID},fd={s.qmp_fd},server=on,wait=off",
            "-mon", f"chardev={QMP_ID},mode=control",
            "-chardev", f"socket,id={SERIAL_ID},fd={s.serial_fd},server=on,wait=on,"
                        f"logfile={serial_log},logappend=on",
            "-serial", f"chardev:{SERIAL_ID}",
            "-device", f"virtio-serial-pci,id={VSERIAL_ID}",
            "-chardev", f"socket,id={SHELL_ID},fd={s.shell_fd},server=on,wait=on",
            # a port, not a console: no tty layer in the guest (see guests/_scripts.py)
            "-device", f"virtserialport,chardev={SHELL_ID},name={SHELL_PORT_NAME},"
                       f"id={SHELL_DEVICE}", *flash]
    if spec.agent_fd is not None:
        argv += ["-chardev", f"socket,id={AGENT_ID},fd={spec.agent_fd},server=on,wait=off",
                 "-device", f"virtserialport,bus={VSERIAL_BUS},chardev={AGENT_ID},"
                            f"name={AGENT_PORT_NAME},id={AGENT_DEVICE}"]
    if spec.monitor_port is not None:
        argv += ["-chardev", f"socket,id=hmp,host=127.0.0.1,port={spec.monitor_port},"
                             "server=on,wait=off", "-mon", "chardev=hmp,mode=readline"]
    if spec.kernel is not None:
        argv += ["-kernel", spec.kernel]
        if spec.initrd is not None:
            argv += ["-initrd", spec.initrd]
        if spec.append:
            argv += ["-append", spec.append]
    argv += display_args(vga=spec.vga, tablet=spec.tablet)
    for index, disk in enumerate(spec.disks):
        argv += blockdev.disk_args(disk.layers, node=disk_id(index), dev_id=disk_id(index),
                                   interface=disk.interface,
                                   readonly=disk.readonly, bootindex=disk.bootindex)
    if spec.cd is not None:
        argv += blockdev.cd_args(spec.cd.path, node=cd_id(0), dev_id=cd_id(0),
                                 interface=spec.cd.interface,
                                 bootindex=spec.cd.bootindex)
    # Options of one -m merge, so this adds hot-plug room to "-m size".
    max_memory = spec.max_memory if spec.max_memory is not None else spec.memory
    argv += ["-m", f"slots={spec.memory_slots},maxmem={max_memory}M"]
    argv += ram_backend_args(spec.ram_file, spec.memory, shared=spec.ram_shared)
    if spec.balloon:
        argv += ["-device", f"virtio-balloon-pci,id={BALLOON_ID},free-page-reporting=on"]
    if spec.incoming:
        argv += ["-incoming", "defer"]
    argv += nic_args(spec.nics)
    if microvm.is_microvm(spec.machine_type):
        argv = microvm.adapt(argv)
    return argv + list(spec.extra_args)


def ram_backend_args(path: str | None, mib: int, *, shared: bool) -> list[str]:
    """Guest RAM in a file: ``share=on`` writes reach the file, ``off`` maps it copy-on-write.

    JSON, so that any file name needs no escaping.
    """
    if path is None:
        return []
    return ["-object", json.dumps({"qom-type": "memory-backend-file", "id": RAM_BACKEND_ID,
                                   "size": mib << 20, "mem-path": path, "share": shared})]


def firmware_args(code: str | None, nvram: str | None) -> tuple[list[str], str]:
    """UEFI in flash: the ``-blockdev``s and the ``-machine`` properties naming them.

    Empty for SeaBIOS (neither file). The code is opened read-only, the variable
    store read-write; the machine maps them as ``pflash0`` and ``pflash1``.
    """
    if code is None and nvram is None:
        return [], ""
    if code is None or nvram is None:
        raise ValueError("UEFI firmware needs both its code and a variable store")
    argv = [*blockdev.blockdev({"driver": "raw", "node-name": FIRMWARE_CODE_NODE,
                                "read-only": True,
                                "file": {"driver": "file", "filename": code,
                                         "read-only": True}}),
            *blockdev.blockdev({"driver": "raw", "node-name": FIRMWARE_VARS_NODE,
                                "file": {"driver": "file", "filename": nvram}})]
    return argv, f",pflash0={FIRMWARE_CODE_NODE},pflash1={FIRMWARE_VARS_NODE}"


def display_args(*, vga: str, tablet: str | None) -> list[str]:
    """A headless display adapter, a VNC display without a listener, and the tablet."""
    argv = ["-display", "none", "-vga", vga, "-vnc", "none"]
    if tablet == "virtio":
        argv += ["-device", f"virtio-tablet-pci,id={TABLET_ID}"]
    elif tablet == "usb":
        argv += ["-device", f"qemu-xhci,id={XHCI_ID}",
                 "-device", f"usb-tablet,id={TABLET_ID},bus={XHCI_ID}.0"]
    return argv


def nic_args(nics: Sequence[NicSpec]) -> list[str]:
    """``-netdev tap,fd=`` and ``-device`` per NIC."""
    argv: list[str] = []
    for nic in nics:
        netdev = netdev_id(nic.index)
        # virtio-net tells the guest the MTU (VIRTIO_NET_F_MTU): its driver sets it
        mtu = f",host_mtu={nic.mtu}" if nic.mtu and nic.model.startswith("virtio-net") else ""
        argv += ["-netdev", f"tap,id={netdev},fd={nic.fd}",
                 "-device", f"{nic.model},netdev={netdev},mac={nic.mac},"
                            f"id={nic_id(nic.index)}{mtu}"]
    return argv
