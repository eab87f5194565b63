"""The seed's ``stop`` (forceful), ``shutdown`` (graceful) and ``send`` on real guests.

The tiny guest powers off on the ACPI power button through its ``acpid``; killing
that daemon makes a guest that ignores ACPI, as many real ones do at a boot menu.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmanager import Harddrive, Machine, State
from vmanager.errors import ConfigError, ShutdownTimeout, StateError
from vmanager.guests import TinyGuest
from vmtest_util import unique_name

MARKER = b"seed-stop-flush-marker"
SECTOR = 4096  # where the guest writes it (512-byte sectors)


def _ignore_acpi(m: Machine) -> None:
    m.succeed("killall acpid; ! pidof acpid")


def _read_image(disk: Harddrive, tmp_path: Path, offset: int, size: int) -> bytes:
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", disk.format, "-O", "raw", str(disk.path),
                    str(raw)], check=True, stdin=subprocess.DEVNULL)
    with raw.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def test_stop_is_forceful_fast_and_flushes_disks(make_machine: Callable[..., Machine],
                                                 tmp_path: Path) -> None:
    disk = Harddrive(tmp_path / "d.qcow2", size="64M")
    disk.create()
    m = make_machine(harddrives=disk)
    m.start_vm()
    m.wait_ready(120)
    _ignore_acpi(m)
    # The guest really ignores the power button now: a graceful shutdown times out
    # and leaves it running.
    with pytest.raises(ShutdownTimeout, match="did not power off within 2"):
        m.shutdown(timeout=2)
    assert m.is_alive() and m.state is State.RUNNING
    assert m.succeed("echo still-here").strip() == "still-here"
    # O_DIRECT without a flush: the data reaches QEMU but, in a fresh qcow2 cluster,
    # its mapping sits in QEMU's metadata cache. SIGKILL alone loses it; quit keeps it.
    m.succeed(f"printf '{MARKER.decode()}' | dd of=/dev/vda bs=512 seek={SECTOR} "
              "oflag=direct conv=notrunc,sync 2>/dev/null")
    pid = m.pid
    started = time.monotonic()
    m.stop()
    took = time.monotonic() - started
    assert took < 2.0, f"stop() took {took:.2f} s"
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert m.state is State.DEFINED and not m.run_dir.exists()
    assert _read_image(disk, tmp_path, SECTOR * 512, len(MARKER)) == MARKER


def test_stop_kills_a_qemu_that_does_not_answer(make_machine: Callable[..., Machine]) -> None:
    m = make_machine()
    m.start_vm()
    pid = m.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # QMP quit gets no answer, QEMU cannot exit by itself
    started = time.monotonic()
    m.stop()
    took = time.monotonic() - started
    assert took < 2.0, f"stop() took {took:.2f} s"
    assert not Path(f"/proc/{pid}").exists() and not m.run_dir.exists()


def test_context_manager_exit_is_forceful(tiny: TinyGuest) -> None:
    name = unique_name("ctx")
    with Machine(name, **tiny.machine_args(name), memory=256) as m:
        m.start_vm()
        m.wait_ready(120)
        _ignore_acpi(m)
        pid = m.pid
        started = time.monotonic()
    took = time.monotonic() - started
    assert took < 2.0, f"leaving 'with' took {took:.2f} s"
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_shutdown_powers_the_guest_off(make_machine: Callable[..., Machine]) -> None:
    m = make_machine()
    m.start_vm()
    m.wait_ready(120)
    m.freeze()  # a frozen machine is resumed so that it can power off
    status = m.shutdown(timeout=60)
    assert status == 0
    assert not m.is_alive() and m.state is State.DEFINED and not m.run_dir.exists()
    # the guest's kernel itself powered off (not QEMU quitting under it)
    assert "reboot: Power down" in m.console.read()
    with pytest.raises(StateError, match="must be running"):
        m.shutdown()


# -- send ----------------------------------------------------------------------------------
def test_send_str_is_a_monitor_command_even_when_it_names_a_key(
        shared_machine: Machine) -> None:
    m = shared_machine
    try:
        # "stop" is also QEMU's name of the Stop key; as a str it is the monitor command
        assert m.send("stop") == ""
        assert m.state is State.PAUSED and m.status() == "paused"
        assert "paused" in m.send("info status")
        m.send("cont")
        assert m.state is State.RUNNING and m.status() == "running"
        assert "running" in m.send("info status")
        assert "announce_self" in m.send("help")  # the monitor's help, not the Help key
    finally:
        if m.status() != "running":
            m.send("cont")
    assert m.succeed("echo alive").strip() == "alive"


def test_send_bytes_is_a_key_combination(shared_machine: Machine) -> None:
    m = shared_machine
    try:
        assert m.send(b"ctrl-alt-f2") == ""
        m.wait_until_succeeds("grep -x tty2 /sys/class/tty/tty0/active", timeout=10)
    finally:
        m.send(b"ctrl-alt-f1")
    m.wait_until_succeeds("grep -x tty1 /sys/class/tty/tty0/active", timeout=10)


def test_send_refuses_bytes_that_are_no_key_combination(shared_machine: Machine) -> None:
    with pytest.raises(ConfigError, match=re.escape("pass a str")):
        shared_machine.send(b"info status")
    with pytest.raises(ConfigError, match=r"bytes .* or a str"):
        shared_machine.send(42)  # type: ignore[arg-type]
    assert shared_machine.state is State.RUNNING


def test_send_quit_is_followed_by_state(make_machine: Callable[..., Machine]) -> None:
    m = make_machine()
    m.start_vm()
    pid = m.pid
    m.send("quit")                               # the monitor command: QEMU exits
    assert m.state is State.STOPPED and not m.is_alive()
    m.stop()                                     # cleans up what is left
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert m.state is State.DEFINED and not m.run_dir.exists()
