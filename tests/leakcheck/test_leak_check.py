"""The suite-wide leak check fires: a nested pytest run leaks on purpose and must fail.

The nested run uses the real ``tests/conftest.py``. Its test starts a process
that double-forks away from pytest (as dnsmasq does) and one plain child,
changes ``VMANAGER_RUN_DIR`` at import (as ``tests/net/conftest.py`` does) and
returns without cleaning up; the check must name both processes, kill them and
fail the test. A well-behaved twin must pass, so the check is not just noisy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

LEAKY = '''
import os, subprocess, sys, tempfile
NAP = "import time; time.sleep(300)"
os.environ["VMANAGER_RUN_DIR"] = tempfile.mkdtemp(prefix="vmt-elsewhere-")

def _daemon(tag):
    # double fork + setsid, like a daemon: not our child, not our session
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", NAP, tag])
        os._exit(0)
    os.waitpid(pid, 0)

def test_leaks_a_daemon_and_a_child():
    _daemon("{tag}-daemon")
    subprocess.Popen([sys.executable, "-c", NAP, "{tag}-child"])

def test_cleans_up():
    p = subprocess.Popen([sys.executable, "-c", NAP, "{tag}-tidy"])
    p.kill()
    p.wait()
'''


def _sleepers(tag: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if tag.encode() in cmd and state != b"Z":
                found.append(int(entry))
    return found


def test_leak_check_fails_a_leaking_test_and_kills_what_it_leaked(tmp_path: Path) -> None:
    tag = f"leakprobe{os.getpid()}"
    for name in ("conftest.py", "vmtest_util.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "test_inner.py").write_text(LEAKY.replace("{tag}", tag))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMANAGER_")}
    env["VMANAGER_TEST_SHARED_HOST"] = "1"
    env["PYTHONPATH"] = str(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        out = result.stdout + result.stderr
        assert result.returncode == 1, out
        assert "2 passed, 1 error" in out, out
        assert "ERROR at teardown of test_leaks_a_daemon_and_a_child" in out, out
        assert "test leaked" in out, out
        assert f"{tag}-daemon" in out and f"{tag}-child" in out, out
        assert f"{tag}-tidy" not in out, out
        deadline = time.monotonic() + 10
        while _sleepers(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _sleepers(tag), "the leak check did not kill what the test leaked"
    finally:
        for pid in _sleepers(tag):
            os.kill(pid, signal.SIGKILL)


ESCAPING = '''
import os, tempfile
from pathlib import Path

def test_a_forked_copy_escapes_into_pytest():
    pid = os.fork()
    if pid == 0:
        raise KeyboardInterrupt  # a helper child whose signal handler raised
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 70, status
    Path(os.environ["ESCAPE_REPORT"]).write_text(tempfile.gettempdir())

def test_the_session_goes_on_with_its_files():
    assert Path(tempfile.gettempdir()).is_dir()
'''


def test_a_forked_copy_of_the_session_exits_without_tearing_it_down(tmp_path: Path) -> None:
    """A forked child that gets back into pytest exits at once (status 70): it runs no
    teardown and does not remove the session's temporary directory."""
    for name in ("conftest.py", "vmtest_util.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "test_inner.py").write_text(ESCAPING)
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMANAGER_")}
    env |= {"VMANAGER_TEST_SHARED_HOST": "1", "PYTHONPATH": str(tmp_path),
            "ESCAPE_REPORT": str(report)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "2 passed" in out, out
    assert report.read_text().startswith(tempfile.gettempdir()), out
