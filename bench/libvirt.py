"""Management overhead against libvirt: ``virsh start`` of an equivalent domain.

The domain boots the same kernel and initrd directly under TCG
(``<domain type='qemu'>``), 256 MiB, one vCPU, the same CPU model, serial port
and virtio console on unix sockets, a std VGA and a virtio tablet, no NIC.
The benchmark starts ``virtlogd`` and ``libvirtd`` itself as child processes
(there is no systemd here) and stops them afterwards; if a libvirtd is running
already it is used and left alone. The domain is destroyed and undefined even
on failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from bench.context import Context
from bench.core import Row, Skip, timer
from bench.lifecycle import _vm_start

URI = "qemu:///system"
DOMAIN = "vmbench-virsh"
SOCK = Path("/run/libvirt/libvirt-sock")


def _virsh(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    proc = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def daemons(log_dir: Path) -> Iterator[str]:
    """virtlogd + libvirtd for the duration; yields what was done ("started"/"reused")."""
    for tool in ("libvirtd", "virtlogd", "virsh"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} is not installed (scripts/setup bench installs "
                       "libvirt-daemon-system and libvirt-clients)")
    if _answers(SOCK):
        yield "reused a running libvirtd"
        return
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for argv, name in ((["virtlogd"], "virtlogd"), (["libvirtd"], "libvirtd")):
            with (log_dir / f"{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              start_new_session=True))
        deadline = time.monotonic() + 30
        while not _answers(SOCK):
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                tail = (log_dir / "libvirtd.log").read_text(errors="replace")[-1500:]
                raise Skip(f"libvirtd did not come up: {tail.strip()}")
            time.sleep(0.05)
        yield "started virtlogd and libvirtd"
    finally:
        for proc in reversed(procs):
            _stop(proc)


def domain_xml(ctx: Context, run: Path) -> str:
    """The libvirt domain equivalent to vmanager's tiny-guest machine."""
    args = ctx.machine_args("bench-virsh")
    kernel, initrd = run / "vmlinux", run / "initrd.img"
    shutil.copyfile(args["kernel"], kernel)
    shutil.copyfile(args["initrd"], initrd)
    return f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>{escape(args["append"])}</cmdline>
  </os>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{escape(ctx.qemu)}</emulator>
    <controller type='usb' model='none'/>
    <serial type='unix'><source mode='bind' path='{run}/serial0.sock'/><target port='0'/></serial>
    <channel type='unix'>
      <source mode='bind' path='{run}/shell.sock'/>
      <target type='virtio' name='vmanager.shell'/>
    </channel>
    <input type='tablet' bus='virtio'/>
    <video><model type='vga'/></video>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
"""


def virsh_start(ctx: Context) -> list[Row]:
    if not ctx.full and not ctx.libvirt:
        raise Skip("quick mode leaves libvirt out (libvirtd re-probes QEMU for about a "
                   "minute when it starts here); run with --full or --libvirt")
    run = ctx.work / "libvirt"
    run.mkdir(mode=0o755)
    os.chmod(ctx.work, 0o755)
    n = ctx.reps(3, 10)
    with daemons(ctx.work) as how:
        xml = run / "domain.xml"
        xml.write_text(domain_xml(ctx, run))
        if DOMAIN in _virsh("list", "--all", "--name", timeout=120).split():
            raise RuntimeError(f"a libvirt domain {DOMAIN!r} exists already")
        with timer() as t_define:
            _virsh("define", str(xml), timeout=300)
        virsh: list[float] = []
        vm: list[float] = []
        try:
            for i in range(n + 1):  # the first pair is a warm-up
                with timer() as t:
                    _virsh("start", DOMAIN)
                dv = t()
                _virsh("destroy", DOMAIN)
                dm, m = _vm_start(ctx, "bench-virsh")
                m.kill()
                if i:
                    virsh.append(dv * 1000)
                    vm.append(dm * 1000)
        finally:
            _virsh("destroy", DOMAIN, check=False)
            _virsh("undefine", DOMAIN, check=False)
    row = Row("start until QMP answers vs libvirt", "ms", baseline_name="virsh start",
              goal="<= 0.1x virsh")
    row.pair(vm, virsh)
    assert row.ratio is not None
    row.met = row.ratio.median <= 0.1
    row.extra = {"define_s": t_define()}
    row.note = (f"{how}; the first define took {t_define():.0f} s (libvirtd probing QEMU); "
                "virsh start returns once libvirt's own QMP session is up and the "
                "vCPUs run; includes the virsh client's start")
    return [row]
