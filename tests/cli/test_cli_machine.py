"""Every machine command of the CLI against one real tiny guest started by the CLI."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmanager import Machine
from vmanager.cli.main import EXIT_NOT_FOUND, EXIT_STATE, EXIT_USAGE
from vmanager.guests._scripts import READY_LINE
from vmcli import js, ok, py, vm

pytestmark = pytest.mark.guest


def test_list_shows_the_running_machine(cli_machine: str) -> None:
    rows = {r["name"]: r for r in js("list")}
    row = rows[cli_machine]
    assert row["state"] == "running" and row["persistent"] and row["pid"] > 0
    assert Path(f"/proc/{row['pid']}/cmdline").read_bytes().split(b"\0")[0].endswith(
        b"qemu-system-x86_64")
    assert cli_machine in ok("list")


def test_exec_returns_the_guest_command_status_and_output(cli_machine: str) -> None:
    r = vm("exec", cli_machine, "--", "echo out-$((6*7)); echo err >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout == "out-42\n" and r.stderr == "err\n"
    assert js("exec", cli_machine, "uname", "-s") == {"status": 0, "stdout": "Linux\n",
                                                     "stderr": ""}


def test_exec_options_after_the_name_are_not_sent_to_the_guest(cli_machine: str) -> None:
    # before the fix the guest ran "--timeout 30 --json -- echo -n hi" (status 127)
    assert js("exec", cli_machine, "--timeout", "30", "--json", "--", "echo", "-n", "hi") == {
        "status": 0, "stdout": "hi", "stderr": ""}
    assert ok("exec", cli_machine, "--timeout=30", "echo", "--", "x") == "-- x\n"



def test_exec_keeps_several_arguments_apart_and_runs_one_as_a_command_line(
        cli_machine: str) -> None:
    # several words are argv: sh gets "-c" and the whole script (before: it got "echo")
    assert ok("exec", cli_machine, "--", "sh", "-c", "echo a; echo b") == "a\nb\n"
    assert ok("exec", cli_machine, "--", "echo", "x  y", "$HOME", ";") == "x  y $HOME ;\n"
    # one word is a command line for the guest's shell
    assert ok("exec", cli_machine, "--", "echo x; echo $((1+1))") == "x\n2\n"


def test_attach_from_a_second_process_sees_history_and_controls(cli_machine: str) -> None:
    code = f"""
import json
from vmanager import Machine
from vmanager.state import attach
m = attach({cli_machine!r})
assert isinstance(m, Machine)
out = {{"state": m.state.value, "pid": m.pid, "uname": m.succeed("uname -r").strip(),
       "history": {READY_LINE!r} in m.console.read(), "status": m.status()}}
m.console.write("echo serial-$((7*6))\\n")
m.console.wait_for("serial-42", timeout=30)
m.detach()
print(json.dumps(out))
"""
    r = py(code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == "running" and out["status"] == "running"
    assert out["history"], "the console lost what the guest printed before attach"
    assert out["uname"]
    # the machine still runs after the second process let go
    assert ok("exec", cli_machine, "echo", "still") == "still\n"


def test_freeze_stops_the_guest_and_unfreeze_resumes(cli_machine: str) -> None:
    assert js("freeze", cli_machine)["status"] == "paused"
    assert "paused" in ok("monitor", cli_machine, "info", "status")
    t0 = js("monitor", "--qmp", cli_machine, "query-status")
    assert t0["status"] == "paused"
    # exec must not answer while the vCPUs are stopped
    assert vm("exec", "--timeout", "2", cli_machine, "true").returncode != 0
    assert js("unfreeze", cli_machine)["status"] == "running"
    assert ok("exec", cli_machine, "echo", "back") == "back\n"


def test_monitor_runs_hmp_and_qmp(cli_machine: str) -> None:
    assert "VM status: running" in ok("monitor", cli_machine, "info", "status")
    name = js("monitor", "--qmp", cli_machine, "query-name")
    assert name["name"] == cli_machine


def test_console_batch_types_and_prints(cli_machine: str) -> None:
    out = ok("console", cli_machine, "--batch", "--wait", "1.5",
             input="echo console-$((5*5))\n")
    assert "console-25" in out
    assert READY_LINE in ok("console", cli_machine, "--dump")


def test_screenshot_writes_a_png(cli_machine: str, tmp_path: Path) -> None:
    target = tmp_path / "screen.png"
    ok("screenshot", cli_machine, str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_send_key_switches_the_virtual_terminal(cli_machine: str) -> None:
    ok("send-key", cli_machine, "ctrl-alt-f2")
    assert ok("exec", cli_machine, "--", "fgconsole 2>/dev/null || cat "
              "/sys/class/tty/tty0/active").strip() in ("2", "tty2")
    ok("send-key", cli_machine, "ctrl-alt-f1")


def test_type_text(cli_machine: str) -> None:
    r = vm("type", cli_machine, "-e", "echo typed > /tmp/typed\\n")
    if not hasattr(Machine, "type_text"):
        assert r.returncode == EXIT_STATE and "type_text" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    ok("exec", cli_machine, "--", "for i in $(seq 50); do [ -e /tmp/typed ] && break; "
       "sleep 0.1; done; cat /tmp/typed")


def test_snapshot_save_load_list_delete(cli_machine: str) -> None:
    ok("snapshot", cli_machine, "save", "s1")
    assert "s1" in js("snapshot", cli_machine, "list")
    ok("exec", cli_machine, "touch", "/tmp/after-s1")
    ok("snapshot", cli_machine, "load", "s1")
    assert vm("exec", cli_machine, "test", "-e", "/tmp/after-s1").returncode == 1
    ok("snapshot", cli_machine, "delete", "s1")
    assert "s1" not in js("snapshot", cli_machine, "list")


def test_concurrent_cli_calls_take_turns(cli_machine: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: vm("exec", cli_machine, "echo", f"n{i}"), range(6)))
    assert [r.returncode for r in results] == [0] * 6, [r.stderr for r in results]
    assert [r.stdout for r in results] == [f"n{i}\n" for i in range(6)]


def test_a_busy_machine_is_reported_not_hung(cli_machine: str) -> None:
    from vmanager.state import attach
    m = attach(cli_machine)
    try:
        r = vm("exec", "--timeout", "1", cli_machine, "true")
        assert r.returncode == EXIT_STATE
        assert "busy" in r.stderr
    finally:
        m.detach()


def test_errors_have_documented_exit_codes(cli_machine: str) -> None:
    assert vm("exec", "no-such-vm", "true").returncode == EXIT_NOT_FOUND
    r = vm("start", cli_machine)
    assert r.returncode == EXIT_STATE and "already running" in r.stderr
    assert vm("frobnicate").returncode == EXIT_USAGE
    r = vm("--json", "stop", "no-such-vm")
    assert json.loads(r.stderr)["exit_code"] == EXIT_NOT_FOUND
    assert vm("define", cli_machine, "--guest", "tiny").returncode == EXIT_STATE


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """``vmanager --json list | head -0``: exit 141 like other Unix tools, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "vmanager.cli.main", "--json", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ.copy())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has printed anything
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141, err
    assert "Traceback" not in err, err
