"""What an idle tiny machine holds: no stored zeros of the kernel, a small translation buffer."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.guest


def _stored_and_memory(kernel: Path) -> tuple[int, int]:
    """Sums of p_filesz and p_memsz over the kernel's PT_LOAD segments."""
    elf = kernel.read_bytes()
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    n, = struct.unpack_from("<H", elf, 0x38)
    stored = memory = 0
    for i in range(n):
        pos = phoff + 56 * i
        if struct.unpack_from("<I", elf, pos) == (1,):
            filesz, memsz = struct.unpack_from("<QQ", elf, pos + 0x20)
            stored, memory = stored + filesz, memory + memsz
    return stored, memory


def _mapping_rss_kib(pid: int, path: Path) -> int:
    """Resident KiB of QEMU's mappings of ``path``."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_idle_tiny_machine_holds_no_stored_zeros_of_its_kernel(make_machine: Any) -> None:
    m = make_machine(accel="tcg")
    if m.kernel.name != "vmlinux":
        pytest.skip("this kernel boots through its bzImage, not PVH")
    stored, memory = _stored_and_memory(m.kernel)
    # Debian's vmlinux stores ~21 MB of .bss/.init.scratch zeros; the builder leaves
    # them to the loader's zero fill
    assert memory - stored > 16 << 20
    assert m.kernel.stat().st_size < stored + (8 << 20)
    m.start_vm()
    m.wait_ready()
    # the guest's bss really is zero-filled memory: the kernel ran and its shell answers
    assert m.succeed("echo ok").strip() == "ok"
    assert _mapping_rss_kib(m.pid, m.kernel) * 1024 <= m.kernel.stat().st_size + (2 << 20)
    assert "tcg,tb-size=16" in m.argv


def test_tiny_guest_boots_on_microvm_with_virtio_mmio_devices(tiny: Any) -> None:
    from vmanager import Machine
    from vmanager.guests.tiny import TinyGuest
    from vmtest_util import unique_name
    assert isinstance(tiny, TinyGuest)
    name = unique_name("mv")
    m = Machine(name, **tiny.machine_args(name, machine_type="microvm"), memory=192, nics=1)
    try:
        m.start_vm()
        assert m.argv[m.argv.index("-machine") + 1].startswith("microvm")
        m.wait_ready()
        assert m.succeed("hostname").strip() == name
        # no PCI bus; the shell's port, the agent's and the balloon are virtio-mmio
        # devices the kernel found through ACPI (LNRO0005)
        assert m.succeed("ls /sys/bus/pci/devices 2>/dev/null | wc -l").strip() == "0"
        paths = m.succeed("for d in /sys/bus/virtio/devices/*; do readlink -f $d; done").split()
        assert len(paths) >= 3 and all("LNRO0005" in p for p in paths), paths
        assert "vmanager.shell" in m.succeed("cat /sys/class/virtio-ports/*/name")
        # the NIC is a virtio-net-device with the MAC vmanager gave it
        assert "LNRO0005" in m.succeed("readlink -f /sys/class/net/eth0/device")
        assert m.succeed("cat /sys/class/net/eth0/address").strip() == m.nics[0].mac
        assert m.execute("cat /proc/cmdline").stdout.split()[-1].startswith("tsc_early_khz=")
    finally:
        m.kill()
    assert not m.run_dir.exists()


def test_microvm_refuses_a_cd_drive_by_name_and_leaves_nothing(tiny: Any,
                                                                tmp_path: Path) -> None:
    from vmanager import CD, Machine
    from vmanager.errors import ConfigError
    from vmtest_util import unique_name
    iso = tmp_path / "x.iso"
    iso.write_bytes(bytes(2048 * 16))
    name = unique_name("mv")
    m = Machine(name, **tiny.machine_args(name, machine_type="microvm"), cd=CD(iso))
    with pytest.raises(ConfigError, match=r"microvm .*'ide-cd'"):
        m.start_vm()
    assert not m.is_alive() and not m.run_dir.exists()


def test_a_recorded_tiny_machine_keeps_its_own_buffer_and_machine_type(tiny: Any) -> None:
    from vmanager.state.persist import machine_kwargs
    assert machine_kwargs("t1", {"guest": "tiny"})["tcg_tb_size"] == 16
    assert machine_kwargs("t1", {"guest": "tiny", "tcg_tb_size": 64})["tcg_tb_size"] == 64
    kw = machine_kwargs("t1", {"guest": "tiny", "machine_type": "microvm"})
    assert kw["machine_type"] == "microvm" and "tsc_early_khz=" in kw["append"]
