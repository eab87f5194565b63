"""Starting a Machine, step by step (what :meth:`Machine.start_vm` does), and cleaning up.

The recorder claims the name -> the run directory and QEMU's sockets ->
each part prepares host objects (undo steps pushed) -> the argv from the
MachineSpec every part filled in (pure) -> QEMU is spawned -> consoles and
QMP connect -> each part's ``after_launch`` -> the recorder stores what runs.
Any failure kills QEMU, runs the undo steps and tears every part down.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

from vmanager import logkeeper
from vmanager.errors import StateError
from vmanager.logkeeper import LogKeeper
from vmanager.machine import process
from vmanager.machine.base import State
from vmanager.machine.part import Launch, teardown_all
from vmanager.qemu import accel as _accel
from vmanager.qemu import cmdline, launch

if TYPE_CHECKING:
    from vmanager.machine.machine import Machine


def start(m: Machine, *, timeout: float) -> None:
    """See :meth:`Machine.start_vm`."""
    if m._detached:
        raise StateError(f"machine {m.name!r} was detached from this process; "
                         "attach to it instead", state="detached")
    if m.is_alive():
        raise StateError(f"machine {m.name!r} is already running (pid {m.pid})",
                         state=m.state, required=State.DEFINED)
    if m.state == State.STOPPED:
        m._cleanup()
    qemu = launch.find_qemu(m.qemu_binary)
    m.accel = _accel.choose(m.accel_requested, qemu)
    run_dir = m.run_dir
    work = Launch(run_dir=run_dir, accel=m.accel)
    listeners = []
    try:
        m._recorder.claim(m.name)
        m._recording = True
        listeners = process.open_run_dir(m.name, run_dir)
        m._owns_run_dir = True
        m.log.info("starting with %s", m.accel)
        work.pass_fds.extend(s.fileno() for s in listeners)
        # the serial log stays bounded after this process exits (QEMU runs on)
        m._log_keeper = keeper = LogKeeper(run_dir, process.SERIAL_LOG,
                                           limit=process.SERIAL_LOG_LIMIT)
        work.serial_log_fd = keeper.fd
        work.pass_fds.append(keeper.fd)
        if m.monitor_port is not None:
            m.log.warning("monitor_port %d: a human monitor listens on 127.0.0.1; "
                             "any local user can reach it and control QEMU as %s",
                             m.monitor_port, "root")
        for part in m._parts():
            part.prepare(work)
        m.argv = cmdline.build(m.spec(work, qemu=qemu))
        m.shell.started_at = time.monotonic()
        m._proc = process.spawn(m.name, m.argv, run_dir=run_dir,
                                   pass_fds=work.pass_fds, log=m.log)
        keeper.close_writer()  # QEMU has its copy; the keeper ends when QEMU does
        m.shell.launched(greeted=False)
        m._monitor = process.connect(
            m.name, m._proc, m.argv, run_dir=run_dir, console=m.console,
            shell_console=m.shell.console, timeout=timeout, log=m.log)
    except BaseException:
        if m._log_keeper is not None:
            m._log_keeper.close_writer()
        m._kill_process()
        work.undo.unwind()
        m._cleanup()
        raise
    finally:
        for s in listeners:
            s.close()
        for fd in work.owned_fds:
            os.close(fd)
    m.state = State.RUNNING
    try:
        for part in m._parts():
            part.after_launch()
        m._recorder.started(m.run_info())
    except BaseException:
        m.kill()
        raise


def cleanup(m: Machine) -> None:
    """After QEMU is gone: disconnect, tear every part down, forget the run, remove its dir."""
    if m._detached:
        return  # the run directory belongs to the running QEMU, not to us
    m._disconnect()
    failures = teardown_all(reversed(m._parts()), m.log)
    try:
        if m._recording:
            m._recording = False
            m._recorder.stopped(m.name)
    finally:
        # Only a run directory this object made (or attached to) is removed: a
        # start refused because the name runs elsewhere must not touch it.
        if m._owns_run_dir:
            _wait_log_keeper(m)
            shutil.rmtree(m.run_dir, ignore_errors=True)
            m._owns_run_dir = False
        m.state = State.DEFINED
    if failures:
        raise failures[0]


def _wait_log_keeper(m: Machine) -> None:
    """Let the serial log's keeper finish (QEMU is gone) before the run dir goes."""
    keeper, m._log_keeper = m._log_keeper, None
    if keeper is not None:
        keeper.wait()
    else:  # started by another process
        logkeeper.wait_gone(m.run_dir / process.SERIAL_LOG)
