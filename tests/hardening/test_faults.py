"""Fault injection with real processes: kill -9 mid-operation, full disks, missing tools.

After each fault the next call reports the truth, cleanup removes everything
(the autouse leak check), and no disk image is corrupted (``qemu-img check``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from vmanager import Harddrive, Machine, Namespace, Switch
from vmanager.errors import HostError, VmanagerError
from vmanager.guests import READY_LINE, TinyGuest


def _run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


def _wait_for_job(m: Machine, job_type: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            jobs = m.qmp("query-jobs")
        except VmanagerError:
            jobs = []
        if any(j.get("type") == job_type for j in jobs):
            return
        time.sleep(0.005)
    raise AssertionError(f"no {job_type} job started")


def _gone(m: Machine, timeout: float = 10.0) -> bool:
    """Whether the machine is seen dead within ``timeout`` (SIGKILL takes a moment)."""
    deadline = time.monotonic() + timeout
    while m.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not m.is_alive()


def _format_disk(m: Machine, marker: str) -> None:
    m.succeed("mke2fs -q /dev/vda && mkdir -p /mnt/d && mount -t ext4 /dev/vda /mnt/d"
              f" && echo {marker} > /mnt/d/marker && sync && umount /mnt/d", timeout=120)


def _disk_marker(m: Machine) -> str:
    return m.succeed("mkdir -p /mnt/d && mount -t ext4 /dev/vda /mnt/d && cat /mnt/d/marker"
                     " && umount /mnt/d").strip()


def test_kill_9_qemu_during_a_live_snapshot(make_machine: Callable[..., Machine],
                                            tmp_path: Path) -> None:
    disk = Harddrive(tmp_path / "disk.qcow2")
    disk.create("64M")
    m = make_machine(harddrives=disk)
    m.start_vm()
    m.wait_ready()
    _format_disk(m, "before-the-crash")
    # Enough dirty RAM that saving takes a moment.
    m.succeed("head -c 48000000 /dev/urandom > /tmp/ballast", timeout=120)
    pid = m.pid
    assert pid is not None
    thread, errors = _run_in_thread(lambda: m.snapshot("doomed"))
    _wait_for_job(m, "snapshot-save")
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], VmanagerError), errors
    assert _gone(m)
    m.stop()
    assert not m.run_dir.exists()
    result = disk.check()
    assert result.corruptions == 0 and result.check_errors == 0
    # The disk still boots into a guest and holds what was written before.
    m2 = make_machine(harddrives=Harddrive(disk.path))
    m2.start_vm()
    m2.wait_ready()
    assert _disk_marker(m2) == "before-the-crash"
    # A snapshot QEMU had finished writing before it died is whole and loads; one it
    # had not finished is absent, never listed half-made.
    if "doomed" in [s.name for s in m2.snapshots()]:
        m2.load_snapshot("doomed")
        assert m2.succeed("stat -c %s /tmp/ballast").strip() == "48000000"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "vmtest", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_filling_up_while_saving_a_snapshot(make_machine: Callable[..., Machine],
                                                 small_tmpfs: Path) -> None:
    disk = Harddrive(small_tmpfs / "disk.qcow2")
    disk.create("64M")
    m = make_machine(harddrives=disk)
    m.start_vm()
    m.wait_ready()
    _format_disk(m, "kept")
    m.succeed("head -c 40000000 /dev/urandom > /tmp/ballast", timeout=120)
    with pytest.raises(VmanagerError):
        m.snapshot("too-big")
    # The machine is still running and intact, and says so.
    assert m.is_alive() and m.status() == "running"
    assert m.succeed("echo still-running").strip() == "still-running"
    assert "too-big" not in [s.name for s in m.snapshots()]
    m.succeed("rm /tmp/ballast")
    assert _disk_marker(m) == "kept"
    m.stop()
    result = disk.check()
    assert result.corruptions == 0 and result.check_errors == 0


def test_kill_9_the_migration_target_leaves_the_source_running(
        make_machine: Callable[..., Machine]) -> None:
    src = make_machine(memory=256)
    src.start_vm()
    src.wait_ready()
    src.succeed("head -c 64000000 /dev/urandom > /tmp/ballast; echo m1 > /tmp/marker",
                timeout=120)
    dst = make_machine(memory=256)
    thread, errors = _run_in_thread(lambda: src.migrate(dst, bandwidth_mib=8, timeout=120))
    deadline = time.monotonic() + 30
    while dst.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dst.pid is not None
    while time.monotonic() < deadline:
        info = src.qmp("query-migrate")
        if info.get("status") == "active" and info.get("ram", {}).get("transferred", 0) > 0:
            break
        time.sleep(0.01)
    os.kill(dst.pid, signal.SIGKILL)
    thread.join(120)
    assert errors and isinstance(errors[0], VmanagerError), errors
    assert src.is_alive() and src.status() == "running"
    assert src.succeed("cat /tmp/marker").strip() == "m1"
    dst.kill()
    assert not dst.run_dir.exists()


def test_kill_9_the_migration_source_fails_cleanly(
        make_machine: Callable[..., Machine]) -> None:
    src = make_machine(memory=256)
    src.start_vm()
    src.wait_ready()
    src.succeed("head -c 64000000 /dev/urandom > /tmp/ballast", timeout=120)
    dst = make_machine(memory=256)
    thread, errors = _run_in_thread(lambda: src.migrate(dst, bandwidth_mib=8, timeout=60))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if src.qmp("query-migrate").get("status") == "active":
                break
        except VmanagerError:
            pass
        time.sleep(0.01)
    assert src.pid is not None
    os.kill(src.pid, signal.SIGKILL)
    thread.join(90)
    assert errors and isinstance(errors[0], VmanagerError), errors
    assert _gone(src)
    src.stop()
    dst.kill()
    assert not dst.is_alive() and not dst.run_dir.exists() and not src.run_dir.exists()


def test_qemu_img_missing_is_a_host_error(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    disk = Harddrive(tmp_path / "x.qcow2")
    with pytest.raises(HostError, match="qemu-img"):
        disk.create("1M")
    assert not disk.path.exists()


def test_qemu_system_missing_is_a_host_error(make_machine: Callable[..., Machine],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    m = make_machine()
    with pytest.raises(HostError, match="qemu-system-x86_64"):
        m.start_vm()
    assert not m.run_dir.exists()


def test_existing_namespace_is_refused_and_left_alone(make_machine: Callable[..., Machine],
                                                      tiny: TinyGuest) -> None:
    name = f"ex{os.getpid() % 100000}"
    netns.create(name)
    try:
        with pytest.raises(VmanagerError, match=name):
            Namespace(name)
        m = make_machine(name, nics=1)
        with pytest.raises(VmanagerError, match=name):
            m.start_vm()
        assert name in netns.listnetns()
        assert not m.run_dir.exists() and not m.is_alive()
    finally:
        netns.remove(name)


def test_existing_bridge_name_is_refused_and_left_alone() -> None:
    name = f"exbr{os.getpid() % 100000}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        try:
            with pytest.raises(VmanagerError, match=name):
                Switch(name)
            assert ipr.link_lookup(ifname=name), "the existing bridge was removed"
        finally:
            ipr.link("del", ifname=name)


def test_kill_9_of_the_manager_during_start_vm(tiny: TinyGuest, tmp_path: Path) -> None:
    """The process in start_vm() dies; its QEMU lives on, is reported, attached and removed."""
    from vmanager.state import records
    name = f"orph{os.getpid() % 10000}"
    pidfile = Path(os.environ["VMANAGER_RUN_DIR"]) / "machines" / name / "qemu.pid"
    script = tmp_path / "starter.py"
    script.write_text(
        "import time\n"
        "from vmanager import Machine, tiny_guest\n"
        f"Machine({name!r}, **tiny_guest().machine_args()).start_vm()\n"
        "time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, str(script)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert pidfile.exists(), "QEMU never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    twin = Machine(name, **tiny.machine_args())
    with pytest.raises(VmanagerError, match="already running"):
        twin.start_vm()
    orphan = Machine.attach(name, timeout=30)
    try:
        assert orphan.is_alive()
        orphan.console.wait_for(READY_LINE, timeout=60)
        assert orphan.succeed("echo adopted").strip() == "adopted"
    finally:
        orphan.kill()
    assert not orphan.is_alive() and not orphan.run_dir.exists()
    assert records.find(name) is None
