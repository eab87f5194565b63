"""The serial log on disk stays bounded while no vmanager process is attached.

``vmanager start`` (here: a Python process that starts a machine, detaches and
exits) leaves QEMU running; the guest then floods its serial port. Before the
log keeper QEMU appended to ``serial0.log`` itself, and the log grew without
limit until some vmanager process attached again.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from vmanager import Machine, paths
from vmanager.guests import TinyGuest
from vmanager.logkeeper import pidfile
from vmanager.qemu.logrotate import RotatingLog
from vmtest_util import unique_name

pytestmark = pytest.mark.guest

LIMIT = 256 * 1024
FLOOD = 3_000_000  # about 6 s through the emulated UART


def test_the_serial_log_stays_bounded_after_the_starting_process_exits(
        tiny: TinyGuest) -> None:
    name = unique_name("lg")
    code = f"""
from vmanager import Machine
from vmanager.guests import tiny_guest
from vmanager.machine import process
process.SERIAL_LOG_LIMIT = {LIMIT}
m = Machine({name!r}, **tiny_guest().machine_args({name!r}), memory=256)
m.start_vm()
m.wait_ready(120)
m.execute("(sleep 2; head -c {FLOOD} /dev/zero | tr '\\\\0' x > /dev/ttyS0; "
          "echo FLOOD-END > /dev/ttyS0) </dev/null >/dev/null 2>&1 &")
m.detach()
"""
    started = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300)
    run_dir = paths.run_dir() / "machines" / name
    assert started.returncode == 0, started.stderr
    try:
        log = run_dir / "serial0.log"
        previous = log.with_name("serial0.log.1")
        largest = 0
        deadline = time.monotonic() + 240
        while b"FLOOD-END" not in RotatingLog(log).history(64 * 1024):
            assert time.monotonic() < deadline, "the flood did not end"
            for f in (log, previous):
                if f.exists():
                    largest = max(largest, f.stat().st_size)
            time.sleep(0.2)
        assert largest <= LIMIT
        assert log.stat().st_size <= LIMIT and previous.stat().st_size == LIMIT
        # the whole flood went through: the newest 2 x LIMIT bytes are its end
        history = RotatingLog(log).history(10 ** 9)
        assert history.rstrip().endswith(b"x" * 1000 + b"FLOOD-END")
    finally:
        m = Machine.attach(name)
        keeper = int(pidfile(run_dir / "serial0.log").read_text())
        m.kill()
    assert not run_dir.exists()
    assert not _alive(keeper), "the log keeper outlived the machine"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
