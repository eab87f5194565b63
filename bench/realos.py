"""A real Debian 12 guest: image build, boot until the guest agent answers, ACPI power-off.

Each row is measured beside the same work done by hand:

* **build**: ``images.build(rebuild=True)`` in a private cache vs the ``mmdebstrap``
  run alone with the same package set (the rest of the build is vmanager's
  overhead: configuring the tree, the disk, GRUB, qcow2). Minutes per sample,
  so it runs with ``--full`` or ``--only realos-build``.
* **boot**: ``Machine.start_vm()`` + ``wait_ready()`` (which here means the guest
  agent answers) vs the same argv started by hand, polling the agent's socket
  with ``guest-sync-delimited`` in a plain loop. Every sample boots a fresh
  overlay with the same cloud-init seed, so each is a first boot.
* **power-off**: ``Machine.shutdown()`` right after that boot (which has the guest
  agent run ``systemctl poweroff``, as the ACPI button is not handled before
  systemd-logind runs) vs the same ``guest-exec`` sent on the agent socket by hand.
* **UEFI boot** (``realos-uefi``): the same two rows with ``firmware="uefi"`` (OVMF);
  the hand-run argv gets a fresh copy of OVMF's variable template per sample, as
  vmanager does.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.context import Context
from bench.core import Row, Skip, timer
from bench.rawqemu import RawQemu
from vmanager import CloudInit, Harddrive, Machine, images
from vmanager.storage import CD


def _raw_agent_wait(sock_path: Path, timeout: float, then: bytes = b"") -> None:
    """Poll the agent like a plain script would: connect, sync, wait for the answer;
    then send ``then`` (a command) on the synchronised connection."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock_path))
        buf = b""
        while time.monotonic() < deadline:
            # a fresh id each time: answers to earlier syncs may still be queued
            ident = secrets.randbelow(1 << 31)
            s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                            "arguments": {"id": ident}}).encode() + b"\n")
            s.settimeout(3)
            try:
                while True:
                    buf += s.recv(65536)
                    if b"\xff" in buf:
                        tail = buf[buf.rindex(b"\xff") + 1:]
                        if b"\n" in tail and json.loads(tail.split(b"\n")[0]).get(
                                "return") == ident:
                            if then:
                                # wait for its answer: qemu-ga drops what arrives
                                # just before the host side hangs up
                                s.sendall(then)
                                rest = tail.split(b"\n", 1)[1]
                                while b"\n" not in rest:
                                    chunk = s.recv(65536)
                                    if not chunk:
                                        break
                                    rest += chunk
                            return
            except TimeoutError:
                continue
    raise TimeoutError("the guest agent did not answer")


def _fresh_overlay(path: Path, base: Path) -> Harddrive:
    path.unlink(missing_ok=True)
    disk = Harddrive(path, backing=base)
    disk.create()
    return disk


def boot_and_poweroff(ctx: Context) -> list[Row]:
    """Boot the Debian image to the agent answering, then ACPI power-off; both by hand too."""
    return _boot_and_poweroff(ctx, "bios")


def uefi_boot_and_poweroff(ctx: Context) -> list[Row]:
    """The same under UEFI (OVMF)."""
    from vmanager.errors import HostError
    from vmanager.qemu.firmware import find_uefi
    try:
        find_uefi()
    except HostError as exc:
        raise Skip(str(exc)) from exc
    return _boot_and_poweroff(ctx, "uefi")


def _boot_and_poweroff(ctx: Context, firmware: str) -> list[Row]:
    if os.geteuid() != 0:
        raise Skip("building the Debian image needs root")
    base = images.build("debian-12").path
    work = ctx.work / f"realos-{firmware}"
    work.mkdir(exist_ok=True)
    seed = CloudInit(hostname="bench", users=["bench"], password="bench").seed(
        output=work / "seed.iso")
    disk_path = work / "deb.qcow2"
    n = ctx.reps(1, 3)
    boot_vm: list[float] = []
    boot_raw: list[float] = []
    off_vm: list[float] = []
    off_raw: list[float] = []
    probe = Machine("bench-deb", memory=1024, harddrives=_fresh_overlay(disk_path, base),
                    cd=CD(seed.path), accel=ctx.accel, firmware=firmware)  # type: ignore[arg-type]
    try:
        probe.start_vm()
        argv = list(probe.argv)
        store = probe.flash.vars
    finally:
        probe.kill()
    raw_vars = work / "raw-vars.fd"
    if store is not None:  # the raw run's own variable store, fresh per sample
        argv = [a.replace(json.dumps(str(store)), json.dumps(str(raw_vars))) for a in argv]
    for i in range(n):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            disk = _fresh_overlay(disk_path, base)
            if which == 0:
                m = Machine("bench-deb", memory=1024, harddrives=disk, cd=CD(seed.path),
                            accel=ctx.accel, firmware=firmware)  # type: ignore[arg-type]
                try:
                    with timer() as t:
                        m.start_vm()
                        m.wait_ready(600)
                    with timer() as t2:
                        m.shutdown(timeout=120)
                finally:
                    m.kill()
                boot_vm.append(t())
                off_vm.append(t2())
                continue
            if store is not None:
                from vmanager.qemu.firmware import find_uefi
                shutil.copyfile(find_uefi().vars_template, raw_vars)
            with RawQemu(argv, work / "raw") as q:
                with timer() as t:
                    q.launch()
                    _raw_agent_wait(work / "raw" / "qga0.sock", 600)
                boot_raw.append(t())
                assert q.proc is not None
                with timer() as t2:
                    _raw_agent_wait(work / "raw" / "qga0.sock", 30,
                                    then=json.dumps({"execute": "guest-exec", "arguments": {
                                        "path": "/bin/sh", "arg": ["-c", "systemctl poweroff"]}
                                    }).encode() + b"\n")
                    q.proc.wait(120)
                off_raw.append(t2())
    under = " under UEFI (OVMF)" if firmware == "uefi" else ""
    boot = Row(f"Debian 12 boot{under} until the guest agent answers (first boot, cloud-init "
               "seed)", "s", baseline_name="same argv, agent socket polled by hand")
    boot.pair(boot_vm, boot_raw)
    boot.note = (f"TCG, 1 vCPU, 1 GiB; {'KVM' if ctx.accel == 'kvm' else 'no KVM'}; the image "
                 "boots from its own disk ("
                 + ("BOOTX64.EFI from its ESP under OVMF" if firmware == "uefi" else
                    "GRUB under SeaBIOS") + ")")
    off = Row(f"Debian 12 power-off{under} right after boot (shutdown(): systemctl poweroff via "
              "the agent)", "s", baseline_name="the same guest-exec on the agent socket + wait",
              goal="seconds")
    off.pair(off_vm, off_raw)
    assert off.value is not None
    off.met = off.value.max < 30
    return [boot, off]


def build(ctx: Context) -> list[Row]:
    """A cold image build vs mmdebstrap alone (the download and install it wraps)."""
    if os.geteuid() != 0:
        raise Skip("building the Debian image needs root")
    if not ctx.full and os.environ.get("VMANAGER_BENCH_BUILD") != "1":
        raise Skip("a cold build takes minutes; run with --full (or VMANAGER_BENCH_BUILD=1)")
    from vmanager.images import debian
    old = os.environ.get("VMANAGER_CACHE_DIR")
    cache = Path(tempfile.mkdtemp(prefix="bench-img-", dir=ctx.work))
    os.environ["VMANAGER_CACHE_DIR"] = str(cache)
    try:
        with timer() as t:
            image = images.build("debian-12", rebuild=True)
        size = image.path.stat().st_size
    finally:
        if old is None:
            del os.environ["VMANAGER_CACHE_DIR"]
        else:
            os.environ["VMANAGER_CACHE_DIR"] = old
        subprocess.run(["rm", "-rf", "--one-file-system", str(cache)], check=False)
    target = ctx.work / "mmdebstrap-root"
    try:
        with timer() as t2:
            subprocess.run(["unshare", "--mount", "--propagation", "private", "--pid",
                            "--fork", "--kill-child", "mmdebstrap", "--mode=root",
                            "--variant=apt", "-q",
                            "--include=" + ",".join(debian.BASE_PACKAGES),
                            "bookworm", str(target)],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(target)], check=False)
    row = Row("Debian 12 image build, cold (download, install, disk, GRUB, qcow2)", "s",
              baseline_name="mmdebstrap alone, same packages")
    row.pair([t()], [t2()])
    row.note = f"image file {size >> 20} MiB (4 GiB virtual); network-bound"
    return [row]
