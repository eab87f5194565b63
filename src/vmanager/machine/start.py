"""Starting a Machine, step by step (what :meth:`Machine.start_vm` does).

The recorder claims the name -> the run directory and QEMU's sockets ->
each part prepares host objects (undo steps pushed) -> the argv from the
MachineSpec every part filled in (pure) -> QEMU is spawned -> consoles and
QMP connect -> each part's ``after_launch`` -> the recorder stores what runs.
Any failure kills QEMU, runs the undo steps and tears every part down.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from vmanager.errors import StateError
from vmanager.logkeeper import LogKeeper
from vmanager.machine import process
from vmanager.machine.base import State
from vmanager.machine.part import Launch
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
