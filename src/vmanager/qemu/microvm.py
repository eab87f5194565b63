"""QEMU's ``microvm`` machine: the argv of a ``pc`` machine rewritten for virtio-mmio.

``microvm`` has no PCI bus, no IDE, no VGA and no memory hot-plug; its devices
are virtio-mmio transports the kernel finds through ACPI (``LNRO0005``), so the
guest needs the ``virtio_mmio`` driver (the tiny guest ships it). In exchange
the firmware and the kernel scan no PCI bus and probe no legacy controllers, and
QEMU makes fewer devices.

:func:`adapt` is pure, like :func:`vmanager.qemu.cmdline.build`, which calls it
for ``machine_type="microvm"`` (options may follow: ``"microvm,rtc=on"``).
What a ``microvm`` cannot have is refused with a :class:`ConfigError` naming it.
"""

from __future__ import annotations

from vmanager.errors import ConfigError

MACHINE = "microvm"

#: PCI virtio devices vmanager adds, and their virtio-mmio forms.
MMIO_DEVICES = {
    "virtio-serial-pci": "virtio-serial-device",
    "virtio-balloon-pci": "virtio-balloon-device",
    "virtio-tablet-pci": "virtio-tablet-device",
    "virtio-keyboard-pci": "virtio-keyboard-device",
    "virtio-net-pci": "virtio-net-device",
    "virtio-blk-pci": "virtio-blk-device",
    "virtio-scsi-pci": "virtio-scsi-device",
    "virtio-rng-pci": "virtio-rng-device",
}
#: Devices that sit on a bus of one of the above, not on PCI.
BUS_DEVICES = frozenset({"virtserialport", "virtconsole", "scsi-hd", "scsi-cd"})


def is_microvm(machine_type: str) -> bool:
    """Whether ``machine_type`` (``name[,options]``) is QEMU's ``microvm``."""
    return machine_type.split(",", 1)[0] == MACHINE


def adapt(argv: list[str]) -> list[str]:
    """``argv`` (vmanager's own part of a ``pc`` command line) for a ``microvm``.

    PCI virtio devices become their ``-device`` forms, the display adapter
    ``-vga none`` and the memory hot-plug room (``-m slots=,maxmem=``) is left
    out. Any other device (``ide-cd``, ``e1000``, ``qemu-xhci``...) is refused.
    """
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg not in ("-device", "-vga", "-m"):
            out.append(arg)
            continue
        value = next(args)
        if arg == "-vga":
            out += ["-vga", "none"]
        elif arg == "-m" and value.startswith("slots="):
            continue  # no DIMM slots: microvm has no memory hot-plug
        elif arg == "-m":
            out += [arg, value]
        else:
            driver, sep, props = value.partition(",")
            if driver in MMIO_DEVICES:
                out += ["-device", MMIO_DEVICES[driver] + sep + props]
            elif driver in BUS_DEVICES:
                out += ["-device", value]
            else:
                raise ConfigError(
                    f"machine_type microvm has no PCI bus, IDE, USB or ISA devices, so it "
                    f"cannot have device {driver!r}; use virtio devices (interface='virtio', "
                    f"NIC model 'virtio-net-pci', tablet 'virtio' or none) or "
                    f"machine_type 'pc'")
    return out
