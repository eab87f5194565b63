"""UEFI firmware without QEMU: the pflash argv, finding OVMF through QEMU's firmware
descriptors, and the machine's own variable store (made 0600, kept or removed)."""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vmanager import Machine
from vmanager.errors import ConfigError, HostError
from vmanager.machine.firmware import RUN_VARS, UefiFlash, check_firmware
from vmanager.machine.part import Launch
from vmanager.qemu import cmdline, firmware
from vmanager.qemu.cmdline import MachineSpec, Sockets

SOCKETS = Sockets(qmp_fd=3, serial_fd=4, shell_fd=5, serial_log="/run/m/serial0.log",
                  pidfile="/run/m/qemu.pid")
BASE = MachineSpec(qemu="/usr/bin/qemu-system-x86_64", name="m1", accel="tcg", sockets=SOCKETS)
UEFI = replace(BASE, firmware_code="/fw/CODE.fd", firmware_vars="/run/m/my vars,1.fd")


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_bios_machines_have_no_flash() -> None:
    argv = cmdline.build(BASE)
    assert _opt(argv, "-machine") == ["pc,accel=tcg"]
    assert "-blockdev" not in argv and not any("pflash" in a for a in argv)


def test_uefi_maps_read_only_code_and_a_writable_store_to_the_flash_chips() -> None:
    argv = cmdline.build(UEFI)
    assert _opt(argv, "-machine") == ["pc,accel=tcg,pflash0=fw-code,pflash1=fw-vars"]
    nodes = {d["node-name"]: d for d in map(json.loads, _opt(argv, "-blockdev"))}
    assert nodes["fw-code"] == {"driver": "raw", "node-name": "fw-code", "read-only": True,
                                "file": {"driver": "file", "filename": "/fw/CODE.fd",
                                         "read-only": True}}
    # JSON: a comma or space in the path needs no escaping
    assert nodes["fw-vars"]["file"] == {"driver": "file", "filename": "/run/m/my vars,1.fd"}
    assert "read-only" not in nodes["fw-vars"]
    # with a TCG buffer size the machine options stand alone and still name the chips
    sized = cmdline.build(replace(UEFI, tcg_tb_size=64, machine_type="q35"))
    assert _opt(sized, "-machine") == ["q35,pflash0=fw-code,pflash1=fw-vars"]
    assert cmdline.build(UEFI) == argv  # pure


def test_code_without_a_store_is_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        cmdline.build(replace(BASE, firmware_code="/fw/CODE.fd"))


def _descriptor(directory: Path, name: str, code: Path, nvram: Path, *,
                features: tuple[str, ...] = (), machines: tuple[str, ...] = ("pc-i440fx-*",
                                                                              "pc-q35-*")
                ) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps({
        "interface-types": ["uefi"],
        "mapping": {"device": "flash",
                    "executable": {"filename": str(code), "format": "raw"},
                    "nvram-template": {"filename": str(nvram), "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": list(machines)}],
        "features": list(features)}))


def _files(tmp: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp / name).write_bytes(name.encode() * 64)
        out.append(tmp / name)
    return out


def test_descriptors_pick_plain_uefi_in_name_order_and_later_dirs_override(
        tmp_path: Path) -> None:
    secure_code, plain_code, vars_t, etc_code = _files(tmp_path, "SEC.fd", "PLAIN.fd",
                                                       "VARS.fd", "ETC.fd")
    share, etc = tmp_path / "share", tmp_path / "etc"
    _descriptor(share, "40-secure.json", secure_code, vars_t,
                features=("requires-smm", "secure-boot"))
    _descriptor(share, "60-plain.json", plain_code, vars_t)
    (share / "10-garbage.json").write_text("{not json")
    _descriptor(share, "20-missing.json", tmp_path / "gone.fd", vars_t)
    found = firmware.find_uefi("pc", dirs=[share], known=())
    assert (found.code, found.vars_template) == (plain_code, vars_t)
    assert found.source == str(share / "60-plain.json")
    assert firmware.find_uefi("pc-q35-7.2", dirs=[share], known=()).code == plain_code
    # /etc's file of the same name wins over /usr/share's
    _descriptor(etc, "60-plain.json", etc_code, vars_t)
    assert firmware.find_uefi("q35", dirs=[share, etc], known=()).code == etc_code


def test_a_descriptor_for_other_machines_is_skipped_and_known_paths_are_the_fallback(
        tmp_path: Path) -> None:
    code, vars_t = _files(tmp_path, "C.fd", "V.fd")
    _descriptor(tmp_path / "d", "60.json", code, vars_t, machines=("virt-*",))
    fallback = firmware.find_uefi("pc", dirs=[tmp_path / "d"], known=((str(code), str(vars_t)),))
    assert (fallback.code, fallback.source) == (code, "known path")


def test_missing_ovmf_is_a_host_error_naming_the_files(tmp_path: Path) -> None:
    with pytest.raises(HostError) as info:
        firmware.find_uefi("pc", dirs=[tmp_path], known=(("/nope/CODE.fd", "/nope/VARS.fd"),))
    assert "/nope/CODE.fd" in str(info.value) and "apt-get install ovmf" in str(info.value)
    with pytest.raises(ConfigError, match="microvm"):
        firmware.find_uefi("microvm", dirs=[tmp_path], known=())


@pytest.mark.parametrize("kwargs, match", [
    ({"firmware": "efi"}, "firmware must be one of bios, uefi"),
    ({"firmware": "bios", "nvram": "/tmp/x.fd"}, "without firmware='uefi'"),
    ({"firmware": "uefi", "nvram": 7}, "nvram must be a file path"),
])
def test_bad_firmware_options_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Machine("fw-bad", **kwargs)


def test_an_elf_kernel_cannot_boot_under_uefi(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(ConfigError, match="ELF vmlinux"):
        Machine("fw-elf", kernel=kernel, firmware="uefi")
    assert Machine("fw-elf", kernel=kernel).firmware == "bios"
    assert check_firmware("uefi", tmp_path / "v.fd") == ("uefi", tmp_path / "v.fd")


class _View:
    name = "fw-part"
    log = logging.getLogger("test.firmware")


@pytest.fixture
def ovmf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> firmware.UefiFirmware:
    """A fake OVMF found through a descriptor in a directory of the test's own."""
    code, vars_t = _files(tmp_path, "CODE.fd", "VARS.fd")
    _descriptor(tmp_path / "descriptors", "60-edk2.json", code, vars_t)
    monkeypatch.setattr(firmware, "descriptor_dirs", lambda: [tmp_path / "descriptors"])
    return firmware.find_uefi()


def _launch(run_dir: Path) -> Launch:
    run_dir.mkdir(mode=0o700)
    return Launch(run_dir=run_dir, accel="tcg")


def test_store_per_run_is_a_private_copy_removed_with_the_machine(
        tmp_path: Path, ovmf: firmware.UefiFirmware) -> None:
    part = UefiFlash(_View(), "uefi", None, lambda: "pc")  # type: ignore[arg-type]
    launch = _launch(tmp_path / "run")
    part.prepare(launch)
    store = tmp_path / "run" / RUN_VARS
    assert part.vars == store and part.code == ovmf.code
    assert store.read_bytes() == ovmf.vars_template.read_bytes()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    spec = part.contribute(BASE)
    assert (spec.firmware_code, spec.firmware_vars) == (str(ovmf.code), str(store))
    assert part.runtime() == {"kind": "uefi", "code": str(ovmf.code), "vars": str(store)}
    part.teardown()
    assert not store.exists() and part.vars is None


def test_nvram_file_is_made_once_kept_and_checked(tmp_path: Path,
                                                  ovmf: firmware.UefiFirmware) -> None:
    nvram = tmp_path / "web_VARS.fd"
    part = UefiFlash(_View(), "uefi", nvram, lambda: "pc")  # type: ignore[arg-type]
    part.prepare(_launch(tmp_path / "run1"))
    assert stat.S_IMODE(nvram.stat().st_mode) == 0o600
    nvram.write_bytes(b"x" * nvram.stat().st_size)  # what the guest wrote
    part.teardown()
    assert nvram.read_bytes()[:1] == b"x"            # kept
    part.prepare(_launch(tmp_path / "run2"))          # reused, not replaced
    assert nvram.read_bytes()[:1] == b"x"
    part.teardown()
    nvram.write_bytes(b"short")
    with pytest.raises(ConfigError, match="another firmware build"):
        part.prepare(_launch(tmp_path / "run3"))
    nvram.unlink()
    nvram.symlink_to(ovmf.vars_template)
    with pytest.raises(ConfigError, match="not a regular file"):
        part.prepare(_launch(tmp_path / "run4"))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)                               # anyone could swap files in there
    other = UefiFlash(_View(), "uefi", shared / "v.fd", lambda: "pc")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="writable by others"):
        other.prepare(_launch(tmp_path / "run5"))
    assert not (shared / "v.fd").exists()


def test_a_failed_start_removes_the_nvram_it_made(tmp_path: Path,
                                                  ovmf: firmware.UefiFirmware) -> None:
    nvram = tmp_path / "new_VARS.fd"
    part = UefiFlash(_View(), "uefi", nvram, lambda: "pc")  # type: ignore[arg-type]
    launch = _launch(tmp_path / "run")
    part.prepare(launch)
    assert nvram.exists()
    assert launch.undo.unwind() == []
    assert not nvram.exists()


def test_bios_needs_no_firmware_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firmware, "descriptor_dirs", lambda: [])
    part = UefiFlash(_View(), "bios", None, lambda: "pc")  # type: ignore[arg-type]
    part.prepare(_launch(tmp_path / "run"))
    assert part.contribute(BASE) == BASE and os.listdir(tmp_path / "run") == []


LAB = """
[lab]
name = "efilab"

[switches.lan]
[machines.efi]
guest = "tiny"
firmware = "uefi"
nics = [{ switch = "lan" }]
"""


def test_lab_files_take_firmware_and_exports_keep_it() -> None:
    from vmanager.errors import LabFileError
    from vmanager.export import export
    from vmanager.lab import parse
    from vmanager.state.persist import machine_kwargs

    lab = parse(LAB, path=Path("/labs/efi.toml"))
    (m,) = lab.machines
    assert m.firmware == "uefi" and m.definition()["firmware"] == "uefi"
    assert machine_kwargs("efi", {"firmware": "uefi", "nvram": "/v.fd"},
                          for_attach=True) == {"firmware": "uefi", "nvram": "/v.fd"}
    vm = next(d for d in export(lab).manifests if d["kind"] == "VirtualMachine")
    assert vm["spec"]["template"]["spec"]["domain"]["firmware"]["bootloader"] == {
        "efi": {"secureBoot": False}}
    with pytest.raises(LabFileError, match=r"machines\.efi\.firmware"):
        parse(LAB.replace('"uefi"', '"coreboot"'), path=Path("/labs/efi.toml"))
