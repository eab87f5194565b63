"""The log keeper: a pipe copied into a log that never passes 2 x its limit.

Real processes (the keeper script run by the venv's Python) and real pipes;
what QEMU and dnsmasq do with their end is proven in tests/machine and
tests/net.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from vmanager import logkeeper
from vmanager.logkeeper import LogKeeper
from vmanager.qemu.logrotate import RotatingLog


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def test_a_flood_leaves_at_most_two_files_of_the_limit_and_keeps_the_end(
        tmp_path: Path) -> None:
    keeper = LogKeeper(tmp_path, "serial0.log", limit=64 * 1024)
    for i in range(4000):  # 4000 x 256 bytes = 1 MB, 16 x the limit
        write_all(keeper.fd, f"{i:08d}".encode() * 32)
    keeper.wait()
    log, previous = tmp_path / "serial0.log", tmp_path / "serial0.log.1"
    assert 0 < log.stat().st_size <= 64 * 1024
    assert previous.stat().st_size == 64 * 1024
    assert (log.stat().st_mode & 0o777, previous.stat().st_mode & 0o777) == (0o600, 0o600)
    history = RotatingLog(log).history(10 ** 9)
    assert history.endswith(b"00003999" * 32)
    assert b"00003600" in history and b"00000000" not in history  # the end, in order
    assert keeper.proc.returncode == 0


def test_the_keeper_outlives_its_starter_and_ends_with_the_writer(tmp_path: Path) -> None:
    """What `vmanager start` relies on: the CLI exits, the guest keeps printing."""
    code = f"""
import os, sys
from pathlib import Path
from vmanager.logkeeper import LogKeeper
k = LogKeeper(Path({str(tmp_path)!r}), "out.log", limit=4096)
os.set_inheritable(k.fd, True)
os.dup2(k.fd, 1)   # our stdout is the writer the child inherits...
k.close_writer()
k.abandon()
print(k.proc.pid, flush=True)
os.execvp("sh", ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"])
"""
    # ...and the starting Python is gone (exec'd into the writer) before most is written
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    log = tmp_path / "out.log"
    logkeeper.wait_gone(log, timeout=10)
    assert log.stat().st_size <= 4096 and log.with_name("out.log.1").stat().st_size <= 4096
    history = RotatingLog(log).history(10 ** 6)
    # NAME.1 is full and NAME holds the rest: how much depends on how the keeper's
    # reads fell (one read of it all leaves NAME full too; a loaded host reads more often)
    assert 4096 < len(history) <= 8192 and history.endswith(b"line-1999\n")
    lines = history.decode().splitlines()[1:]  # the first may be cut
    assert [int(x.split("-")[1]) for x in lines] == list(range(2000 - len(lines), 2000))


def test_the_log_is_never_followed_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 1000)
    (tmp_path / "serial0.log").symlink_to(victim)
    keeper = LogKeeper(tmp_path, "serial0.log", limit=512)
    write_all(keeper.fd, b"x" * 5000)
    keeper.wait()
    assert victim.read_bytes() == b"v" * 1000
    assert keeper.proc.returncode == 0  # it drained the pipe all the same


def test_wait_gone_waits_for_that_keeper_only(tmp_path: Path) -> None:
    keeper = LogKeeper(tmp_path, "a.log")
    pid = keeper.proc.pid
    started = time.monotonic()
    logkeeper.wait_gone(tmp_path / "a.log", timeout=0.5)  # its writer (us) still runs
    assert time.monotonic() - started >= 0.5
    assert os.waitpid(pid, 0)[1] != 0  # killed after the timeout
    keeper.proc.returncode = -9
    keeper.close_writer()
    # a pid file naming a process that is not a keeper of this log is ignored
    logkeeper.pidfile(tmp_path / "b.log").write_text(f"{os.getpid()}\n")
    started = time.monotonic()
    logkeeper.wait_gone(tmp_path / "b.log", timeout=5)
    assert time.monotonic() - started < 1
    logkeeper.wait_gone(tmp_path / "none.log")  # no pid file: nothing to wait for
