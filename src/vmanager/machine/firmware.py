"""The machine's firmware (``m.flash``): SeaBIOS, or UEFI (OVMF) in flash with its own variables.

``Machine(..., firmware="bios")`` (the default) boots QEMU's SeaBIOS.
``firmware="uefi"`` maps OVMF's code read-only to the first flash chip and a
variable store of the machine's own to the second, as libvirt and Proxmox do.
The firmware is found through QEMU's firmware descriptors
(:func:`vmanager.qemu.firmware.find_uefi`).

The variable store (boot entries, settings the guest writes with
``efibootmgr``) is a copy of OVMF's template, owner-only (0600):

* by default it lives in the machine's run directory, is made fresh at each
  start and goes with the machine (as with QEMU's own ``-bios`` or a
  transient libvirt domain);
* with ``nvram=PATH`` it is that file, made from the template when missing and
  kept between runs (libvirt's ``<nvram>``); vmanager never deletes it, except
  when the start that made it fails.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import paths, validate
from vmanager.errors import ConfigError, HostError
from vmanager.machine.part import Launch, MachineView, Part
from vmanager.qemu import firmware as _firmware

if TYPE_CHECKING:
    from vmanager.qemu.cmdline import MachineSpec

#: What ``Machine(firmware=...)`` accepts.
FIRMWARE_KINDS = ("bios", "uefi")
#: The variable store's name in the run directory when no ``nvram`` path is given.
RUN_VARS = "uefi-vars.fd"
_MAX_VARS = 64 << 20


def check_firmware(kind: object, nvram: object) -> tuple[str, Path | None]:
    """``bios`` or ``uefi``, and a variable store path (only for ``uefi``)."""
    if kind not in FIRMWARE_KINDS:
        raise ConfigError(f"firmware must be one of {', '.join(FIRMWARE_KINDS)}, not {kind!r}")
    if nvram is None:
        return str(kind), None
    if kind != "uefi":
        raise ConfigError("nvram (a UEFI variable store) was given without firmware='uefi'")
    if not isinstance(nvram, (str, os.PathLike)):
        raise ConfigError(f"nvram must be a file path, not {nvram!r}")
    return str(kind), validate.path(nvram, what="nvram").absolute()


def check_kernel(kind: str, kernel: Path | None) -> None:
    """UEFI boots a kernel directly only through its EFI stub (a bzImage), not an ELF vmlinux."""
    if kind != "uefi" or kernel is None:
        return
    with kernel.open("rb") as f:
        head = f.read(4)
    if head == b"\x7fELF":
        raise ConfigError(f"kernel {str(kernel)!r} is an ELF vmlinux, which boots through PVH "
                          "with firmware='bios' only; UEFI firmware boots a kernel with an "
                          "EFI stub (a bzImage such as Debian's /boot/vmlinuz-*)")


class UefiFlash(Part):
    """OVMF's code and the machine's variable store, for ``firmware="uefi"``."""

    key = "firmware"

    def __init__(self, vm: MachineView, kind: str, nvram: Path | None,
                 machine_type: Callable[[], str]) -> None:
        self._vm = vm
        self.kind = kind
        self.nvram = nvram
        self._machine_type = machine_type
        self._code: Path | None = None
        self._vars: Path | None = None

    @property
    def code(self) -> Path | None:
        """The firmware's code QEMU runs (``None`` unless a UEFI machine has started)."""
        return self._code

    @property
    def vars(self) -> Path | None:
        """The machine's variable store in use (``None`` unless a UEFI machine has started)."""
        return self._vars

    # -- hooks ------------------------------------------------------------------------
    def prepare(self, launch: Launch) -> None:
        """Find OVMF; copy its variable template for this machine unless the store exists."""
        if self.kind != "uefi":
            return
        fw = _firmware.find_uefi(self._machine_type())
        for path in (fw.code, fw.vars_template):
            why = paths.trusted_path(path)
            if why is not None:
                raise HostError(f"UEFI firmware {path} ({fw.source}) is not safe to run: {why}")
        if self.nvram is not None:
            why = paths.trusted_path(self.nvram)
            if why is not None:
                raise ConfigError(f"nvram {str(self.nvram)!r} is not safe to use: {why}")
        target = self.nvram if self.nvram is not None else launch.run_dir / RUN_VARS
        if self.nvram is not None and os.path.lexists(target):
            _check_store(target, fw.vars_template)
        else:
            _copy_private(fw.vars_template, target)
            launch.undo.push(f"remove UEFI variable store {target}",
                             lambda: target.unlink(missing_ok=True))
            self._vm.log.info("UEFI variable store %s made from %s", target, fw.vars_template)
        self._code, self._vars = fw.code, target

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """The flash drives' files."""
        if self._code is None or self._vars is None:
            return spec
        return replace(spec, firmware_code=str(self._code), firmware_vars=str(self._vars))

    def teardown(self) -> None:
        """A store made for this run goes with it; a ``nvram`` file stays."""
        store, self._vars, self._code = self._vars, None, None
        if store is not None and self.nvram is None:
            store.unlink(missing_ok=True)

    def runtime(self) -> dict[str, Any]:
        """The files QEMU has open."""
        return {"kind": self.kind, "code": str(self._code) if self._code else None,
                "vars": str(self._vars) if self._vars else None}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """The files of a machine another process started."""
        code, store = runtime.get("code"), runtime.get("vars")
        self._code = Path(code) if isinstance(code, str) else None
        self._vars = Path(store) if isinstance(store, str) else None

    def release(self) -> None:
        """QEMU keeps its files."""
        self._code = self._vars = None


def _copy_private(template: Path, target: Path) -> None:
    """Copy ``template`` to a new owner-only file ``target`` (never through a link)."""
    data = template.read_bytes()
    if not data or len(data) > _MAX_VARS:
        raise HostError(f"UEFI variable template {template} is {len(data)} bytes")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HostError(f"cannot make UEFI variable store {target}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _check_store(path: Path, template: Path) -> None:
    """An existing ``nvram`` file: a regular file of ours, the template's size."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"nvram {str(path)!r} is not a regular file")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"nvram {str(path)!r} belongs to uid {st.st_uid}, not to this user; "
                          "vmanager does not let a guest write other users' files")
    want = template.stat().st_size
    if st.st_size != want:
        raise ConfigError(f"nvram {str(path)!r} is {st.st_size} bytes but this firmware's "
                          f"variable store ({template}) is {want}: it was made for another "
                          "firmware build; remove it to start from the template")
