"""The tiny test guest: Debian's kernel plus a busybox initramfs, cached per user.

It boots in a few seconds under TCG, prints :data:`READY_LINE` on its first
serial port, runs root shells on the serial port, on ``tty1``/``tty2`` (VGA) and a
machine-readable backdoor shell on the virtio serial port ``vmanager.shell`` for
:meth:`Machine.execute`.

Example::

    from vmanager import Machine
    from vmanager.guests import tiny_guest

    guest = tiny_guest()                       # builds once, then from cache
    with Machine(name="t1", **guest.machine_args()) as m:
        m.start_vm()
        m.wait_ready()
        print(m.succeed("uname -r"))
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmanager import paths
from vmanager.errors import GuestBuildError
from vmanager.guests import _build, _scripts
from vmanager.guests._scripts import READY_LINE
from vmanager.qemu import microvm

log = logging.getLogger(__name__)



def _builder_version() -> str:
    """A digest of the builder's own code: any change to it rebuilds old caches."""
    h = hashlib.sha256()
    for module in (_build, _scripts):
        h.update(Path(module.__file__ or "").read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


BUILDER_VERSION = _builder_version()

#: Shipped in the initramfs. Drivers load at boot for the devices present (by
#: modalias, and later through the hotplug helper); file systems load on mount.
#: Modules outside :data:`BOOT_MODULES` (and their dependencies) are stored
#: xz-compressed: busybox's insmod reads them, and the kernel unpacks a much
#: smaller initramfs at boot.
MODULES = (
    "virtio_pci", "virtio_console", "virtio_net", "virtio_blk", "virtio_balloon",
    "virtio_input", "virtio_rng", "virtio_mem", "virtio_scsi", "e1000", "e1000e", "ata_piix",
    "ahci", "sr_mod", "sd_mod", "isofs", "ext4", "vfat", "evdev", "button", "bochs",
    "8021q", "bonding", "loop", "crc32c_generic",  # ext4 needs crypto-crc32c at mount
    "virtio_mmio",  # machine_type="microvm": its devices are virtio-mmio (found by ACPI)
)

#: What a default machine loads while booting; kept uncompressed for speed.
BOOT_MODULES = frozenset({
    "virtio_pci", "virtio_console", "virtio_net", "virtio_blk", "virtio_balloon",
    "virtio_input", "ata_piix", "evdev", "button", "bochs",
})

#: ``swiotlb=1024``: the 64 MiB bounce buffer the kernel sets aside (and zeroes) because
#: hot-pluggable memory may lie above 4 GiB shrinks to 2 MiB; virtio bypasses it, and
#: it was a quarter of an idle guest's RSS.
DEFAULT_APPEND = ("console=ttyS0 quiet loglevel=3 panic=-1 tsc=reliable no_timer_check "
                  "i8042.nopnp mitigations=off rcupdate.rcu_expedited=1 8250.nr_uarts=1 "
                  "random.trust_cpu=on cryptomgr.notests memhp_default_state=online swiotlb=1024")


#: The tiny guest's TCG translation buffer in MiB (see :meth:`TinyGuest.machine_args`).
TCG_TB_SIZE = 16


@dataclass(frozen=True)
class TinyGuest:
    """A built tiny guest: what :class:`vmanager.Machine` needs to boot it."""

    kernel: Path
    initrd: Path
    kernel_version: str
    pvh: bool

    def append(self, hostname: str | None = None) -> str:
        """The kernel command line, optionally naming the guest's hostname."""
        extra = f" vm.hostname={hostname}" if hostname else ""
        return DEFAULT_APPEND + extra

    def machine_args(self, hostname: str | None = None, *,
                     machine_type: str = "pc") -> dict[str, Any]:
        """Keyword arguments for :class:`vmanager.Machine` to boot this guest.

        ``machine_type="microvm"`` boots it on QEMU's minimal machine (see
        :mod:`vmanager.qemu.microvm`): ~20% faster under TCG, but no VGA screen,
        no IDE/USB devices and no memory or NIC hot-plug. The kernel then gets
        ``tsc_early_khz=`` with the host's TSC rate (``/proc/cpuinfo``; under TCG
        the guest reads the host's TSC): a microvm has no HPET or ACPI PM timer,
        and when the kernel's calibration against the PIT fails, which it does
        under TCG on a busy host, the boot hangs. On a host whose ``cpu MHz``
        is not its TSC rate (frequency scaling) the guest's clock runs off by
        that ratio.

        The CPU model is ``qemu64``: under TCG it boots this kernel ~0.7 s faster
        than ``max`` (fewer features for the kernel to probe and patch in).
        TCG's translation buffer is :data:`TCG_TB_SIZE` MiB instead of QEMU's 1 GiB,
        of which booting this guest touched ~55 MiB (huge pages): an idle machine
        holds ~45 MiB less. The trade: a guest that runs much more code than a shell
        translates it again more often (pass ``tcg_tb_size=None`` to undo).
        Ignored under KVM.
        """
        args: dict[str, Any] = {"kernel": self.kernel, "initrd": self.initrd,
                                "append": self.append(hostname), "cpu_model": "qemu64",
                                "tcg_tb_size": TCG_TB_SIZE}
        if machine_type != "pc":  # Machine's default; left out so callers may pass it
            args["machine_type"] = machine_type
        khz = host_tsc_khz()
        if microvm.is_microvm(machine_type) and khz is not None:
            args["append"] += f" tsc_early_khz={khz}"
        return args


def host_tsc_khz() -> int | None:
    """The host's TSC rate in kHz as ``/proc/cpuinfo`` gives it, or ``None``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "cpu MHz":
                    khz = round(float(value) * 1000)
                    return khz if 100_000 <= khz <= 10_000_000 else None
    except (OSError, ValueError):
        return None
    return None


def _guest_root() -> Path:
    return paths.cache_dir() / "guests"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_cached(directory: Path) -> TinyGuest | None:
    """A cached guest whose manifest and hashes check out, else ``None``."""
    manifest = directory / "manifest.json"
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("builder") != BUILDER_VERSION:
            return None
        for fname, digest in meta["files"].items():
            if _sha256(directory / fname) != digest:
                log.warning("tiny guest cache %s: %s is corrupt; rebuilding", directory, fname)
                return None
        return TinyGuest(kernel=directory / meta["kernel"], initrd=directory / meta["initrd"],
                         kernel_version=meta["kernel_version"], pvh=bool(meta["pvh"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tiny_guest(*, rebuild: bool = False,
               progress: Callable[[str], None] | None = None) -> TinyGuest:
    """Return the tiny guest, building it from Debian packages on first use.

    The cache lives in ``$XDG_CACHE_HOME/vmanager/guests``; a missing or corrupt
    cache (a file whose hash differs from the manifest) is rebuilt from scratch,
    never half-used. ``rebuild=True`` resolves ``linux-image-amd64`` again.

    Raises :class:`GuestBuildError` when packages cannot be fetched or unpacked.
    """
    root = paths.private_dir(_guest_root())
    if not rebuild:
        # a build this process has checked already: no need to wait for the lock,
        # which another program's build may hold for a minute
        for directory in list(_verified):
            if directory.parent == root:
                known = _load_verified(directory)
                if known is not None:
                    return known
    with os.fdopen(paths.open_lock(root / ".lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        pointer = root / "tiny.json"
        if not rebuild:
            for candidate in _candidates(root, pointer):
                cached = _load_verified(candidate)
                if cached is not None:
                    return cached
        guest, dirname = _build_into(root, progress or (lambda _msg: None))
        _verified[root / dirname] = (guest, _signature(guest))
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(json.dumps({"dir": dirname}))
        tmp.replace(pointer)
        # Older builds go once nothing can still be about to boot them.
        for old in root.glob("tiny-*"):
            if old.name != dirname and time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        return guest


def _candidates(root: Path, pointer: Path) -> list[Path]:
    """Cached builds to try: the current one, then any other of this builder version.

    Programs of different vmanager versions sharing one cache each point
    ``tiny.json`` at their own build; looking for a build of our own version
    before building keeps them from rebuilding in turn.
    """
    found: list[Path] = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        found.append(root / str(json.loads(pointer.read_text())["dir"]))

    def age(path: Path) -> float:
        try:
            return -path.stat().st_mtime
        except OSError:  # removed meanwhile (by another program's clean-up)
            return 0.0
    own = sorted(root.glob(f"tiny-*-b{BUILDER_VERSION}"), key=age)
    return found + [p for p in own if p not in found]


#: builds whose hashes this process checked, by directory, with the files' (size, mtime)
_verified: dict[Path, tuple[TinyGuest, tuple[tuple[int, int], ...]]] = {}


def _signature(guest: TinyGuest) -> tuple[tuple[int, int], ...]:
    stats = [guest.kernel.stat(), guest.initrd.stat()]
    return tuple((st.st_size, st.st_mtime_ns) for st in stats)


def _load_verified(directory: Path) -> TinyGuest | None:
    """:func:`_load_cached`, hashing each build once per process (a lab of 20
    machines asked for the guest 20 times, hashing ~70 MB each time)."""
    known = _verified.get(directory)
    if known is not None:
        try:
            if _signature(known[0]) == known[1]:
                return known[0]
        except OSError:
            pass
        del _verified[directory]
    guest = _load_cached(directory)
    if guest is not None:
        _verified[directory] = (guest, _signature(guest))
    return guest


def _build_into(root: Path, progress: Callable[[str], None]) -> tuple[TinyGuest, str]:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        progress("resolving linux-image-amd64")
        meta_deb = _build.download("linux-image-amd64", work)
        kernel_pkg = _build.resolve_kernel_package(meta_deb)
        progress(f"downloading {kernel_pkg} and busybox-static")
        kernel_deb = _build.download(kernel_pkg, work)
        busybox_deb = _build.download("busybox-static", work)
        progress("unpacking")
        tree = work / "tree"
        _build.extract(kernel_deb, tree)
        _build.extract(busybox_deb, tree)
        moddirs = sorted((tree / "lib" / "modules").iterdir())
        if not moddirs:
            raise GuestBuildError(f"{kernel_deb.name} has no /lib/modules")
        version = moddirs[-1].name
        vmlinuz = tree / "boot" / f"vmlinuz-{version}"
        bzimage = vmlinuz.read_bytes()

        progress("extracting the uncompressed kernel for the PVH entry")
        out = work / "out"
        out.mkdir()
        vmlinux = _build.vmlinux_from_bzimage(bzimage)
        if vmlinux is not None:
            (out / "vmlinux").write_bytes(vmlinux)
            kernel_name = "vmlinux"
        else:
            log.info("kernel %s has no PVH entry; booting the bzImage", version)
            kernel_name = "vmlinuz"
        shutil.copyfile(vmlinuz, out / "vmlinuz")

        progress("assembling the initramfs")
        initrd = _initramfs(tree, moddirs[-1], version)
        (out / "initrd.img").write_bytes(initrd)

        files = {name: _sha256(out / name) for name in os.listdir(out)}
        manifest = {"builder": BUILDER_VERSION, "kernel": kernel_name, "initrd": "initrd.img",
                    "kernel_version": version, "kernel_package": kernel_pkg,
                    "pvh": vmlinux is not None, "files": files}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        dirname = f"tiny-{version}-b{BUILDER_VERSION}"
        final = root / dirname
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
        progress(f"built the tiny guest with kernel {version}")
        guest = _load_cached(final)
        if guest is None:
            raise GuestBuildError(f"the freshly built guest in {final} does not verify")
        return guest, dirname
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _initramfs(tree: Path, moddir: Path, version: str) -> bytes:
    cpio = _build.Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root",
              "etc", "mnt", "var"):
        cpio.mkdir(d)
    cpio.chardev("dev/console", 5, 1)
    busybox = tree / "bin" / "busybox"
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in _applets(busybox):
        if applet != "/bin/busybox":
            cpio.symlink(applet.lstrip("/"), "/bin/busybox")
    executables = {
        "init": _scripts.INIT, "etc/rc": _scripts.RC, "bin/serial-shell": _scripts.SERIAL_SHELL,
        "bin/vt-shell": _scripts.VT_SHELL, "bin/backdoor": _scripts.BACKDOOR,
        "etc/acpi/PWRF/00000080": _scripts.POWER_BUTTON, "sbin/hotplug": _scripts.HOTPLUG,
        "usr/share/udhcpc/default.script": _scripts.UDHCPC_SCRIPT,
        "etc/udhcpc/default.script": _scripts.UDHCPC_SCRIPT,  # where Debian's busybox looks
    }
    for name, text in executables.items():
        cpio.file(name, text.encode(), 0o755)
    cpio.file("etc/inittab", _scripts.INITTAB.encode())
    cpio.file("etc/passwd", _scripts.ETC_PASSWD.encode())
    cpio.file("etc/group", _scripts.GROUP.encode())
    cpio.file("etc/hostname", b"tiny\n")

    modules = _build.collect_modules(moddir, MODULES)
    by_name = {m.name: m for m in modules}
    base = f"lib/modules/{version}"
    dep_lines = []
    at_boot = {n for m in BOOT_MODULES for n in _closure(m, by_name)}
    stored = {m.name: m.relpath if m.name in at_boot else m.relpath + ".xz" for m in modules}
    for mod in modules:
        data = mod.data if mod.name in at_boot else lzma.compress(mod.data,
                                                                   check=lzma.CHECK_CRC32)
        cpio.file(f"{base}/{stored[mod.name]}", data)
        # modules.dep lists the whole closure, the module to load last first.
        closure = [stored[n] for n in _closure(mod.name, by_name) if n != mod.name]
        dep_lines.append(f"{stored[mod.name]}: {' '.join(reversed(closure))}".rstrip())
    cpio.file(f"{base}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    for extra in ("modules.builtin", "modules.order"):
        if (moddir / extra).exists():
            cpio.file(f"{base}/{extra}", (moddir / extra).read_bytes())
    aliases = [f"alias {a} {m.name}" for m in modules for a in m.aliases]
    cpio.file(f"{base}/modules.alias", ("\n".join(aliases) + "\n").encode())
    return cpio.getvalue()


def _closure(name: str, by_name: dict[str, _build.Module]) -> list[str]:
    """``name`` and everything it needs, dependencies before dependents."""
    order: list[str] = []

    def visit(n: str) -> None:
        if n in order or n not in by_name:
            return
        for dep in by_name[n].depends:
            visit(dep)
        order.append(n)

    visit(name)
    return order


def _applets(busybox: Path) -> list[str]:
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True, stdin=subprocess.DEVNULL, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestBuildError(f"could not list busybox applets: {exc}") from exc
    return ["/" + line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


__all__ = ["READY_LINE", "TinyGuest", "tiny_guest"]
