"""Records and staleness: kill -9 the QEMU, pid reuse, locks between processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from vmanager.cli.main import EXIT_STALE, EXIT_STATE
from vmanager.state import FileLock, MachineRecord, Runtime, lock_path, locked, records
from vmanager.state.process import Liveness, ProcessIdentity, read_starttime
from vmcli import js, ok, vm
from vmtest_util import unique_name


def test_kill_9_of_qemu_gives_a_stale_record(tiny: object) -> None:
    name = unique_name("k")
    ok("define", name, "--guest", "tiny", "--memory", "192")
    try:
        ok("start", name)
        pid = {r["name"]: r for r in js("list")}[name]["pid"]
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if read_starttime(pid) is None:  # gone (or a zombie)
                break
            time.sleep(0.05)
        row = {r["name"]: r for r in js("list")}[name]
        assert row["state"] == "stale" and "gone" in row["detail"]
        r = vm("exec", name, "true")
        assert r.returncode == EXIT_STALE and "stale" in r.stderr
        assert vm("stop", name).returncode == EXIT_STALE
        ok("clean", name)
        assert {r["name"]: r for r in js("list")}[name]["state"] == "defined"
        assert vm("clean", name).returncode == 0  # nothing stale: still fine
    finally:
        vm("kill", name)
        vm("clean", name)
        vm("undefine", name)


def test_a_reused_pid_is_detected_and_never_signalled(tmp_path: object) -> None:
    name = unique_name("r")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        real = ProcessIdentity.of(sleeper.pid)
        # a record that claims this pid ran QEMU: the cmdline differs
        rt = Runtime(pid=sleeper.pid, starttime=real.starttime,
                     argv=("/usr/bin/qemu-system-x86_64", "-name", name), run_dir="/nonexistent",
                     accel="tcg", started=time.time(), owner_pid=1)
        records.save(MachineRecord(name, definition={"memory": 64}, runtime=rt))
        row = {r["name"]: r for r in js("list")}[name]
        assert row["state"] == "stale" and "another program" in row["detail"]
        assert vm("kill", name).returncode == EXIT_STALE
        assert sleeper.poll() is None, "vmanager signalled a pid it does not own"
        # same argv but a different start time is also not ours
        assert ProcessIdentity(sleeper.pid, real.argv, real.starttime + 1).check() \
            is Liveness.REUSED
        ok("clean", name)
        assert records.find(name) is None  # a transient record goes entirely
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def _hold(path: str, ready: object, release: object) -> None:
    from pathlib import Path
    with FileLock(Path(path), what="test lock"):
        ready.set()  # type: ignore[attr-defined]
        release.wait(10)  # type: ignore[attr-defined]


def test_locks_exclude_other_processes_and_name_the_holder() -> None:
    path = lock_path("machine", unique_name("l"))
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        from vmanager.errors import StateError
        with pytest.raises(StateError, match=f"pid {holder.pid}"):
            FileLock(path, what="x").acquire(0.2)
    finally:
        release.set()
        holder.join(10)
    with FileLock(path, what="x").acquire(1):
        pass


def test_concurrent_record_writers_do_not_corrupt(tmp_path: object) -> None:
    name = unique_name("w")
    code = f"""
from dataclasses import replace
from vmanager.state import locked, records, MachineRecord
for i in range(40):
    with locked("machine", {name!r}):
        rec = records.find({name!r}) or MachineRecord({name!r}, definition={{"n": 0}})
        records.save(replace(rec, definition={{"n": rec.definition["n"] + 1}}))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
             for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0] * 4
    assert records.load(name).definition["n"] == 160
    with locked("machine", name):
        records.delete(name)


def test_undefine_refuses_a_running_record() -> None:
    name = unique_name("u")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        ident = ProcessIdentity.of(sleeper.pid)
        rt = Runtime(pid=ident.pid, starttime=ident.starttime, argv=ident.argv,
                     run_dir="/nonexistent", accel="tcg", started=time.time(), owner_pid=1)
        records.save(MachineRecord(name, definition={}, persistent=True, runtime=rt))
        assert js("list") and vm("undefine", name).returncode == EXIT_STATE
    finally:
        sleeper.kill()
        sleeper.wait()
        records.delete(name)
