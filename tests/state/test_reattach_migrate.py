"""Migration works on a machine attached from another process, as on the one that started it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable

import pytest

from vmanager import Machine, State
from vmanager.state import records
from vmtest_util import unique_name

pytestmark = pytest.mark.guest

STARTER = """
import json, sys
from vmanager import Machine
from vmanager.guests import tiny_guest
name, marker = sys.argv[1:]
m = Machine(name, **tiny_guest().machine_args(name), memory=256)
m.start_vm()
try:
    m.wait_ready(120)
    m.succeed(f"echo {marker} > /tmp/marker")
except BaseException:
    m.kill()
    raise
pid = m.pid
m.detach()
print(json.dumps({"pid": pid}))
"""


def test_an_attached_machine_migrates_into_a_new_one(
        make_machine: Callable[..., Machine]) -> None:
    name, marker = unique_name("rm"), f"ram-{secrets.token_hex(6)}"
    r = subprocess.run([sys.executable, "-c", STARTER, name, marker], capture_output=True,
                       text=True, timeout=300, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    src = Machine.attach(name, timeout=30)
    try:
        dst = make_machine()
        result = src.migrate(dst)
        assert result.transferred > 0 and result.target == dst.name
        # the source that another process started is gone, its record with it
        assert not src.is_alive() and src.state == State.DEFINED
        assert records.find(name) is None
        assert dst.state == State.RUNNING
        assert dst.succeed("cat /tmp/marker").strip() == marker
    finally:
        if src.is_alive():
            src.kill()
    assert json.loads(r.stdout.splitlines()[-1])["pid"] > 0
