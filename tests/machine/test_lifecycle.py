"""The Machine's lifecycle on real QEMU with the tiny guest."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmanager import Machine, State
from vmanager.errors import (
    ConfigError,
    GuestCommandError,
    HostError,
    NotFoundError,
    QemuStartError,
    StateError,
)
from vmanager.guests import READY_LINE, TinyGuest


def _tcp_listen_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A":  # LISTEN
                    inodes.add(cols[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            found.add(m.group(1))
    return found


# -- one shared guest for the read-only checks ------------------------------------------
def test_console_keeps_everything_the_guest_printed(shared_machine: Machine) -> None:
    # The serial shell and the backdoor start side by side: the ready line may come
    # just after wait_ready() returned. Output read later still holds the whole boot.
    shared_machine.console.wait_for(READY_LINE, timeout=30)
    shared_machine.succeed("echo early-marker > /dev/ttyS0")
    shared_machine.console.wait_for("early-marker", timeout=30)
    text = shared_machine.console.read()
    assert text.index(READY_LINE) < text.index("early-marker")


def test_console_write_reaches_the_serial_shell(shared_machine: Machine) -> None:
    shared_machine.console.mark()
    shared_machine.console.write("echo $((6*7))-from-ttyS0\n")
    found = shared_machine.console.wait_for(re.compile(r"(\d+)-from-ttyS0"), timeout=30)
    assert found.group(1) == "42"


def test_execute_returns_status_stdout_and_stderr(shared_machine: Machine) -> None:
    result = shared_machine.execute("echo out; echo err >&2; exit 3")
    assert (result.status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    status, out = shared_machine.execute("cat /proc/sys/kernel/hostname")
    assert status == 0 and out.strip()


def test_succeed_raises_with_status_and_output(shared_machine: Machine) -> None:
    with pytest.raises(GuestCommandError) as info:
        shared_machine.succeed("echo nope; exit 7")
    assert info.value.status == 7 and "nope" in info.value.output


def test_execute_handles_long_and_binary_output(shared_machine: Machine) -> None:
    out = shared_machine.succeed("head -c 200000 /dev/zero | tr '\\0' x")
    assert out == "x" * 200000
    cmd = "echo " + "y" * 6000  # longer than a tty line
    assert shared_machine.succeed(cmd).strip() == "y" * 6000


def test_guest_side_timeout_keeps_the_shell_usable(shared_machine: Machine) -> None:
    started = time.monotonic()
    result = shared_machine.execute("sleep 30", timeout=2)
    assert result.status != 0 and time.monotonic() - started < 10
    assert shared_machine.succeed("echo still-here").strip() == "still-here"


def test_freeze_stops_the_guest_and_unfreeze_resumes_it(shared_machine: Machine) -> None:
    m = shared_machine
    m.succeed("(i=0; while :; do i=$((i+1)); echo tick$i > /dev/ttyS0; usleep 100000; done)"
              " >/dev/null 2>&1 & echo $! > /tmp/ticker")
    try:
        m.console.mark()
        m.console.wait_for(re.compile(r"tick\d+"), timeout=10)
        m.freeze()
        assert m.state is State.PAUSED and m.status() == "paused"
        time.sleep(0.3)  # let output already in flight land
        frozen_at = len(m.console.read_bytes())
        time.sleep(1.5)
        assert len(m.console.read_bytes()) == frozen_at, "guest made progress while frozen"
        m.unfreeze()
        assert m.state is State.RUNNING and m.status() == "running"
        m.console.mark()
        m.console.wait_for(re.compile(r"tick\d+"), timeout=10)
    finally:
        if m.state is State.PAUSED:
            m.unfreeze()
        m.succeed("kill $(cat /tmp/ticker)")


def test_send_runs_monitor_commands_and_returns_their_output(shared_machine: Machine) -> None:
    assert "running" in shared_machine.send("info status")
    assert shared_machine.monitor("info name").strip() == shared_machine.name


def test_send_key_combination_as_in_the_seed(shared_machine: Machine) -> None:
    m = shared_machine
    m.send(b"ctrl-alt-f2")
    assert m.wait_until_succeeds("grep -x tty2 /sys/class/tty/tty0/active", timeout=10)
    m.send(b"ctrl-alt-f1")
    assert m.wait_until_succeeds("grep -x tty1 /sys/class/tty/tty0/active", timeout=10)


def test_second_start_is_refused(shared_machine: Machine) -> None:
    with pytest.raises(StateError, match="already running"):
        shared_machine.start_vm()


def test_run_directory_and_sockets_are_owner_only(shared_machine: Machine) -> None:
    run = shared_machine.run_dir
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    for sock in ("qmp.sock", "serial0.sock", "shell.sock"):
        st = (run / sock).stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_no_tcp_listener_by_default(shared_machine: Machine) -> None:
    assert shared_machine.pid is not None
    assert not _socket_inodes(shared_machine.pid) & _tcp_listen_inodes()


# -- machines of their own ----------------------------------------------------------------
def test_stop_leaves_nothing(make_machine: Callable[..., Machine]) -> None:
    m = make_machine()
    m.start_vm()
    m.wait_ready(120)
    pid, run = m.pid, m.run_dir
    assert pid is not None and run.exists()
    m.stop()
    assert not m.is_alive() and m.state is State.DEFINED
    assert not Path(f"/proc/{pid}").exists(), "QEMU was not reaped"
    assert not run.exists()
    m.stop()  # idempotent


def test_wait_ready_leaves_no_agent_probe_behind(make_machine: Callable[..., Machine]) -> None:
    """The shell answers first on the tiny guest; the thread that pinged the agent
    meanwhile is woken and gone when wait_ready returns (it used to sit in a 2 s
    read holding the agent's lock, so detach() after it took about 1.5 s)."""
    m = make_machine()
    m.start_vm()
    m.wait_ready(120)
    probes = [t.name for t in threading.enumerate() if t.name == f"{m.name}-agent-probe"]
    assert probes == []


def test_context_manager_stops_the_machine(tiny: TinyGuest) -> None:
    with Machine("ctxm", **tiny.machine_args()) as m:
        m.start_vm()
        pid = m.pid
        assert m.is_alive()
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_guest_power_off_is_noticed(make_machine: Callable[..., Machine]) -> None:
    m = make_machine()
    m.start_vm()
    m.wait_ready(120)
    m.succeed("(sleep 0.2; poweroff) >/dev/null 2>&1 &")
    m.wait_for_shutdown(60)
    assert not m.is_alive()
    m.stop()
    assert not m.run_dir.exists()


def test_qemu_dying_at_start_is_reported_with_its_log(
        make_machine: Callable[..., Machine]) -> None:
    m = make_machine(extra_args=["-device", "no-such-device-xyz"])
    with pytest.raises(QemuStartError) as info:
        m.start_vm()
    assert "no-such-device-xyz" in str(info.value)
    assert info.value.argv and info.value.argv[0].endswith("qemu-system-x86_64")
    assert m.pid is None and not m.run_dir.exists() and m.state is State.DEFINED


def test_monitor_port_listens_on_loopback_only(make_machine: Callable[..., Machine]) -> None:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = make_machine(monitor_port=port)
    m.start_vm()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.settimeout(5)
        assert b"QEMU" in conn.recv(200)
    with open("/proc/net/tcp") as f:
        rows = [r.split() for r in f.read().splitlines()[1:]]
    listening = [r[1] for r in rows if r[3] == "0A" and r[1].endswith(f":{port:04X}")]
    assert listening == [f"0100007F:{port:04X}"]
    m.kill()


def test_missing_qemu_binary(make_machine: Callable[..., Machine]) -> None:
    m = make_machine(qemu_binary="qemu-system-nonexistent")
    with pytest.raises(HostError, match="qemu-system-nonexistent"):
        m.start_vm()
    assert not m.run_dir.exists()


@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"memory": "lots"}, ConfigError, "memory"),
    ({"memory": 4}, ConfigError, "too small"),
    ({"cpus": 0}, ConfigError, "cpus"),
    ({"accel": "hvf"}, ConfigError, "accel"),
    ({"monitor_port": 70000}, ConfigError, "monitor_port"),
    ({"kernel": "/nonexistent/vmlinuz"}, NotFoundError, "/nonexistent/vmlinuz"),
])
def test_bad_arguments_name_what_was_wrong(tiny: TinyGuest, kwargs: dict[str, object],
                                           error: type[Exception], text: str) -> None:
    args = {**tiny.machine_args(), **kwargs}
    with pytest.raises(error, match=text):
        Machine("bad", **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x" * 40, "-rf"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="machine name"):
        Machine(name)


def test_missing_disk_and_iso_are_named() -> None:
    from vmanager import CD, Harddrive
    with pytest.raises(NotFoundError, match=r"/nonexistent/x\.iso"):
        Machine("m", cd=CD("/nonexistent/x.iso"))
    with pytest.raises(NotFoundError, match=r"/nonexistent/d\.qcow2"):
        Machine("m", harddrives=Harddrive("/nonexistent/d.qcow2")).start_vm()


def test_a_machine_running_elsewhere_is_not_started_twice(
        shared_machine: Machine, tiny: TinyGuest) -> None:
    twin = Machine(shared_machine.name, **tiny.machine_args())
    with pytest.raises(StateError, match=f"already running.*{shared_machine.pid}"):
        twin.start_vm()
    assert shared_machine.run_dir.exists() and shared_machine.is_alive()
    assert shared_machine.succeed("echo alive").strip() == "alive"


def test_detach_leaves_the_nics_and_attach_then_stop_removes_them(
        make_machine: Callable[..., Machine]) -> None:
    m = make_machine(nics=1)
    m.start_vm()
    m.wait_ready()
    port, pid = m.nics[0].port, m.pid
    assert pid is not None
    m.detach()
    # Detached: QEMU, the machine's namespace and its NIC keep going.
    assert Path(f"/proc/{pid}").exists()
    assert m.name in os.listdir("/run/netns")
    assert os.path.exists(f"/sys/class/net/{port}")
    m.stop()  # inert after detach
    assert Path(f"/proc/{pid}").exists()
    again = Machine.attach(m.name)
    assert "eth0" in again.succeed("ls /sys/class/net")
    again.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert m.name not in os.listdir("/run/netns")
    deadline = time.monotonic() + 5  # the kernel removes a namespace's links asynchronously
    while os.path.exists(f"/sys/class/net/{port}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/sys/class/net/{port}")
