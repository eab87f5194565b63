"""Debian images: ``mmdebstrap`` from Debian's archive, GRUB from the image itself.

The root file system is made by ``mmdebstrap`` (Debian package ``mmdebstrap``)
in a private mount namespace (``unshare --mount``): the ``/proc``, ``/sys`` and
``/dev`` mounts it makes for maintainer scripts exist only in that namespace
and vanish with it, even when the build is killed. The directory is then
adjusted (fstab, GRUB, networking, passwords) and written into a disk file by
:mod:`vmanager.images._disk` without loop devices or mounts, and converted to
a compressed qcow2 image.

What the image holds: systemd, Debian's cloud kernel (``linux-image-cloud-amd64``),
``qemu-guest-agent``, ``cloud-init`` (NoCloud seeds on a ``cidata`` CD),
``openssh-server``, ``systemd-networkd`` doing DHCP on every ``en*``/``eth*``
link (hot-plugged ones too), a serial console on ``ttyS0``, and GRUB for BIOS
(in the MBR) and for UEFI (``EFI/BOOT/BOOTX64.EFI`` on an EFI system partition,
mounted at ``/boot/efi``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vmanager.errors import GuestBuildError
from vmanager.images import _disk, _esp

log = logging.getLogger(__name__)

#: Packages every Debian image has (on top of mmdebstrap's ``apt`` variant).
BASE_PACKAGES = (
    "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "grub-pc-bin",
    "grub-efi-amd64-bin",
    "qemu-guest-agent", "cloud-init", "openssh-server", "sudo", "iproute2",
    "e2fsprogs", "cloud-guest-utils", "netbase", "ca-certificates", "less",
)
#: The kernel command line (the serial console last: it becomes /dev/console).
KERNEL_APPEND = "console=tty0 console=ttyS0,115200n8 net.ifnames=1 quiet"
#: Seconds mmdebstrap may take.
BUILD_TIMEOUT = 1800.0
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$")
_UNREACHABLE = re.compile(r"(Could not resolve|Temporary failure resolving|Failed to fetch|"
                          r"Unable to connect|Connection failed|Network is unreachable|"
                          r"Release' does not have a Release file|No route to host)", re.I)

_NETWORK_FILE = """\
# vmanager: every wired link, present at boot or hot-plugged later, asks for DHCP.
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
UseDomains=yes
"""
# Wait for a link only when the machine has one, and not for long: a guest
# without a DHCP server must not sit two minutes in boot.
_WAIT_ONLINE = """\
[Unit]
ConditionPathExistsGlob=/sys/class/net/e*

[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20
"""
_CLOUD_CFG = """\
# vmanager: look only for NoCloud seeds (a 'cidata' CD) and no network metadata service.
datasource_list: [ NoCloud, None ]
# RSA and ECDSA host keys take tens of seconds to make on an emulated CPU.
ssh_genkeytypes: [ ed25519 ]
# The serial console is for logins: no key fingerprints or tables written to it.
ssh:
  emit_keys_to_console: false
no_ssh_fingerprints: true
# The image has no locales package; C.UTF-8 is built into the C library.
locale: C.UTF-8
"""
# cloud-init's units print to the console as well as the journal; on a serial
# console that interleaves with a login session's output.
_JOURNAL_ONLY = """\
[Service]
StandardOutput=journal
"""
# The agent answers as soon as its port and the root file system are there,
# not after cloud-init's first-boot work (which sits before basic.target).
_AGENT_EARLY = """\
[Unit]
DefaultDependencies=no
After=local-fs.target systemd-journald.socket
Before=shutdown.target
Conflicts=shutdown.target
"""


def check_packages(packages: Sequence[str]) -> list[str]:
    """Validate extra package names; raise :class:`GuestBuildError` naming a bad one."""
    out = []
    for pkg in packages:
        if not isinstance(pkg, str) or not _PACKAGE_RE.match(pkg):
            raise GuestBuildError(f"packages: {pkg!r} is not a Debian package name")
        out.append(pkg)
    return out


def build_root(suite: str, root: Path, *, packages: Sequence[str], mirror: str | None,
               say: Callable[[str], None]) -> None:
    """Run mmdebstrap into the empty directory ``root`` (as root, mounts kept private)."""
    if os.geteuid() != 0:
        raise GuestBuildError("building a Debian image needs root (mmdebstrap in root mode "
                              "and chroot)")
    if shutil.which("mmdebstrap") is None:
        raise GuestBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    # setpriv: mmdebstrap dies with this process. unshare: its mounts live in a
    # private mount namespace, and it is the init of a new pid namespace, so when it
    # dies the kernel kills every apt/dpkg process it started.
    argv = ["setpriv", "--pdeathsig", "KILL",
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "mmdebstrap", "--mode=root", "--variant=apt", "--format=directory",
            "--include=" + ",".join([*BASE_PACKAGES, *packages]),
            "--aptopt=Acquire::Retries=2",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            suite, str(root)]
    if mirror is not None:
        argv.append(mirror)
    say(f"mmdebstrap {suite}: {len(BASE_PACKAGES) + len(packages)} packages and their "
        "dependencies")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "LC_ALL": "C"},
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            if line.startswith("I: "):
                say(line[3:])
            if time.monotonic() - started > BUILD_TIMEOUT:
                raise GuestBuildError(f"mmdebstrap took longer than {BUILD_TIMEOUT:g} s")
        status = proc.wait()
    finally:
        if proc.poll() is None:
            # The whole group: unshare, mmdebstrap and the apt/dpkg it runs.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if status != 0:
        text = "\n".join(tail)
        if _UNREACHABLE.search(text):
            where = mirror or "the host's apt sources"
            raise GuestBuildError(f"cannot reach the Debian archive ({where}); images are "
                                  f"built from Debian's packages and need it:\n{text}")
        raise GuestBuildError(f"mmdebstrap failed with status {status}:\n{text}")


def configure(root: Path, *, root_uuid: str, esp_id: str, hostname: str,
              root_password: str | None) -> None:
    """Make the tree bootable and ready for cloud-init (no mounts, chroot argv only)."""
    # The ESP is mounted where Debian keeps it; nofail: a machine boots without it.
    (root / "etc/fstab").write_text(
        f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
        f"UUID={_esp.fstab_uuid(esp_id)} /boot/efi vfat umask=0077,nofail 0 0\n")
    (root / "boot/efi").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n"
                                    "::1 localhost ip6-localhost ip6-loopback\n")
    # Empty: systemd makes one per machine on first boot (no two clones share it).
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_symlink() or dbus_id.exists():
        dbus_id.unlink()
    net = root / "etc/systemd/network"
    net.mkdir(parents=True, exist_ok=True)
    (net / "80-vmanager-dhcp.network").write_text(_NETWORK_FILE)
    wait = root / "etc/systemd/system/systemd-networkd-wait-online.service.d"
    wait.mkdir(parents=True, exist_ok=True)
    (wait / "vmanager.conf").write_text(_WAIT_ONLINE)
    agent = root / "etc/systemd/system/qemu-guest-agent.service.d"
    agent.mkdir(parents=True, exist_ok=True)
    (agent / "vmanager.conf").write_text(_AGENT_EARLY)
    for unit in ("cloud-init-local", "cloud-init", "cloud-config", "cloud-final"):
        drop = root / f"etc/systemd/system/{unit}.service.d"
        drop.mkdir(parents=True, exist_ok=True)
        (drop / "vmanager.conf").write_text(_JOURNAL_ONLY)
    cfg = root / "etc/cloud/cloud.cfg.d"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "90-vmanager.cfg").write_text(_CLOUD_CFG)
    _disk.run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service",
               "qemu-guest-agent.service"], what="enabling services")
    # SSH host keys are made per machine at first boot (cloud-init, or ssh's unit).
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    if root_password is not None:
        _disk.run(["chroot", str(root), "chpasswd"], what="setting root's password",
                  input_data=f"root:{root_password}\n".encode())
    # apt lists are large and stale by the time the image is used.
    lists = root / "var/lib/apt/lists"
    for entry in lists.glob("*"):
        if entry.is_file():
            entry.unlink()
    for cache in (root / "var/cache/apt").glob("*.bin"):
        cache.unlink()


def build_disk(suite: str, out_qcow2: Path, *, size: int, packages: Sequence[str],
               root_password: str | None, mirror: str | None, hostname: str,
               say: Callable[[str], None], workdir: Path) -> None:
    """Build the whole image into ``out_qcow2`` using a scratch dir under ``workdir``."""
    from vmanager.storage import qemu_img

    work = Path(tempfile.mkdtemp(prefix=".imgbuild-", dir=workdir))
    try:
        root = work / "root"
        root.mkdir()
        build_root(suite, root, packages=packages, mirror=mirror, say=say)
        root_uuid = _disk.new_uuid()
        esp_id = _esp.new_volume_id()
        say("configuring the image (fstab, GRUB, networking)")
        configure(root, root_uuid=root_uuid, esp_id=esp_id, hostname=hostname,
                  root_password=root_password)
        boot_img, core_img = _disk.grub_files(root, root_uuid, KERNEL_APPEND)
        esp = work / "esp.fat"
        _esp.make_esp(esp, volume_id=esp_id, bootx64=_esp.grub_efi(root), workdir=work)
        raw = work / "disk.raw"
        say(f"writing the disk ({size >> 20} MiB: EFI system partition, ext4, GRUB for "
            "BIOS and UEFI)")
        _disk.assemble(root, raw, size=size, root_uuid=root_uuid, boot_img=boot_img,
                       core_img=core_img, esp=esp)
        say("converting to qcow2")
        tmp = out_qcow2.with_name(out_qcow2.name + ".tmp")
        qemu_img.run(["convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)],
                     timeout=BUILD_TIMEOUT)
        tmp.replace(out_qcow2)
    finally:
        _remove_work(work)


def _remove_work(work: Path) -> None:
    left = _disk.mounts_under(work)
    if left:
        # Never delete through a mount (it could reach the host's /dev or /sys).
        log.error("not removing %s: mounts remain under it: %s", work, left)
        return
    shutil.rmtree(work, ignore_errors=True)
