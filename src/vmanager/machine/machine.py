"""The Machine: one QEMU process, its monitor, consoles and attached resources."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from vmanager import paths, validate
from vmanager.errors import (
    ConfigError,
    GuestCommandError,
    NotFoundError,
    QemuError,
    QemuStartError,
    ShutdownTimeout,
    StateError,
)
from vmanager.machine import keys
from vmanager.machine.base import LaunchContext, MachineBase, State
from vmanager.machine.network import NetworkMixin
from vmanager.machine.screen import ScreenMixin
from vmanager.machine.storage import StorageMixin
from vmanager.qemu import accel as _accel
from vmanager.qemu import launch
from vmanager.qemu.chardev import Console, ExecResult, Shell
from vmanager.qemu.qmp import Monitor
from vmanager.state.mixin import PersistMixin

if TYPE_CHECKING:
    from vmanager.net import VirtualNic
    from vmanager.storage import CD, Harddrive

_log = logging.getLogger("vmanager.machine")

#: Seconds :meth:`Machine.stop` gives QEMU to exit after ``quit`` before SIGKILL.
STOP_GRACE = 1.5


class Machine(PersistMixin, NetworkMixin, StorageMixin, ScreenMixin, MachineBase):
    """A QEMU/KVM virtual machine.

    Arguments keep the seed's meaning: ``harddrives`` takes one
    :class:`~vmanager.Harddrive` or a list, ``nics`` a count or a list of
    :class:`~vmanager.VirtualNic`, ``cd`` one :class:`~vmanager.CD`, ``memory``
    MiB of RAM. ``kernel``/``initrd``/``append`` boot a kernel directly.
    ``accel`` is ``"auto"`` (a KVM that really works, else TCG), ``"kvm"`` or
    ``"tcg"``. ``monitor_port`` opens a human monitor on 127.0.0.1:PORT (off by
    default: anyone local could use it).

    Example::

        with Machine("web", memory=512, harddrives=Harddrive("web.qcow2")) as m:
            m.start_vm()
            m.wait_ready()
            print(m.succeed("uname -a"))

    Leaving the ``with`` block stops the machine forcefully (:meth:`stop`) and
    removes what it made; call :meth:`shutdown` in the block for an orderly
    power-off.
    """

    def __init__(
        self,
        name: str,
        *,
        harddrives: Harddrive | Sequence[Harddrive] | None = None,
        nics: int | Sequence[VirtualNic] = 0,
        cd: CD | None = None,
        memory: int | str = 256,
        cpus: int = 1,
        kernel: str | Path | None = None,
        initrd: str | Path | None = None,
        append: str | None = None,
        accel: Literal["auto", "kvm", "tcg"] = "auto",
        monitor_port: int | None = None,
        cpu_model: str | None = None,
        machine_type: str = "pc",
        qemu_binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = validate.name(name, what="machine name")
        self.memory = validate.memory_mib(memory)
        if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 255:
            raise ConfigError(f"cpus must be a whole number from 1 to 255, got {cpus!r}")
        self.cpus = cpus
        if accel not in _accel.ACCEL_CHOICES:
            raise ConfigError(f"accel {accel!r} is not one of {', '.join(_accel.ACCEL_CHOICES)}")
        self.accel_requested: str = accel
        self.accel: str | None = None
        if monitor_port is not None and (isinstance(monitor_port, bool) or
                                         not isinstance(monitor_port, int) or
                                         not 1 <= monitor_port <= 65535):
            raise ConfigError(f"monitor_port must be a TCP port 1-65535, got {monitor_port!r}")
        self.monitor_port = monitor_port
        self.kernel = self._existing_file(kernel, "kernel")
        self.initrd = self._existing_file(initrd, "initrd")
        if self.initrd is not None and self.kernel is None:
            raise ConfigError("initrd was given without kernel")
        if append is not None and self.kernel is None:
            raise ConfigError("append (a kernel command line) was given without kernel")
        self.append = append
        self.cpu_model = cpu_model
        self.machine_type = machine_type
        self.qemu_binary = qemu_binary
        self.extra_args = list(extra_args)
        self.log = _log.getChild(self.name)
        self.state = State.DEFINED
        self.run_dir = paths.run_dir() / "machines" / self.name
        self.console = Console(f"{self.name}/serial0", logger=self.log)
        self._shell_console = Console(f"{self.name}/hvc0", logger=self.log)
        self._shell = Shell(self._shell_console)
        self._monitor: Monitor | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owns_run_dir = False
        self.argv: list[str] = []
        self.started_at: float | None = None
        self._init_storage(harddrives, cd)
        self._init_network(nics)
        self._init_screen()

    @staticmethod
    def _existing_file(value: str | Path | None, what: str) -> Path | None:
        if value is None:
            return None
        path = validate.path(value, what=what)
        if not path.is_file():
            raise NotFoundError(f"{what} {str(path)!r} does not exist or is not a file")
        return path.resolve()

    def __repr__(self) -> str:
        return f"<Machine {self.name} {self.state.value}>"

    # -- context manager ----------------------------------------------------------
    def __enter__(self) -> Machine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- lifecycle ----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The QEMU process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        """Whether the QEMU process is running (frozen counts as alive)."""
        if self._proc is None or self._proc.poll() is not None:
            if self.state in (State.RUNNING, State.PAUSED):
                self.state = State.STOPPED
            return False
        return True

    def start_vm(self, *, timeout: float = 30.0) -> None:
        """Start QEMU and connect its monitor and consoles; returns once QMP answers.

        Raises :class:`StateError` when already running, :class:`HostError` when
        QEMU is missing, :class:`QemuStartError` (with QEMU's log tail) when QEMU
        exits or does not answer; nothing is left behind on failure.
        """
        if self._detached:
            raise StateError(f"machine {self.name!r} was detached from this process; "
                             "attach to it instead", state="detached")
        if self.is_alive():
            raise StateError(f"machine {self.name!r} is already running (pid {self.pid})",
                             state=self.state, required=State.DEFINED)
        if self.state == State.STOPPED:
            self._cleanup()
        qemu = launch.find_qemu(self.qemu_binary)
        self.accel = _accel.choose(self.accel_requested, qemu)
        run_dir = self.run_dir
        ctx = LaunchContext(run_dir=run_dir, accel=self.accel)
        listeners = []
        try:
            self._before_launch()
            paths.private_dir(run_dir.parent)
            other = launch.owner_pid(run_dir)
            if other is not None:
                raise StateError(f"machine {self.name!r} is already running as pid {other} "
                                 "(started elsewhere; Machine.attach() reaches it)",
                                 state=State.RUNNING, required=State.DEFINED)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            paths.private_dir(run_dir)
            self._owns_run_dir = True
            self.log.info("starting with %s", self.accel)
            with ctx.stack:
                qmp_l = launch.listen_unix(run_dir / "qmp.sock")
                con_l = launch.listen_unix(run_dir / "serial0.sock")
                sh_l = launch.listen_unix(run_dir / "shell.sock")
                listeners = [qmp_l, con_l, sh_l]
                ctx.pass_fds.extend(s.fileno() for s in listeners)
                ctx.add(qemu, "-name", f"{self.name},debug-threads=on",
                        "-machine", f"{self.machine_type},accel={self.accel}",
                        "-cpu", self.cpu_model or ("host" if self.accel == "kvm" else "max"),
                        "-smp", str(self.cpus), "-m", self._memory_arg(),
                        "-nodefaults", "-no-user-config",
                        "-pidfile", str(run_dir / "qemu.pid"),
                        "-chardev", f"socket,id=qmp,fd={qmp_l.fileno()},server=on,wait=off",
                        "-mon", "chardev=qmp,mode=control",
                        "-chardev", f"socket,id=serial0,fd={con_l.fileno()},server=on,wait=on,"
                                    f"logfile={run_dir / 'serial0.log'},logappend=on",
                        "-serial", "chardev:serial0",
                        "-device", "virtio-serial-pci,id=vser0",
                        "-chardev", f"socket,id=shell,fd={sh_l.fileno()},server=on,wait=on",
                        "-device", "virtconsole,chardev=shell,name=vmanager.shell,id=shell0")
                if self.monitor_port is not None:
                    self.log.warning("monitor_port %d: a human monitor listens on 127.0.0.1; "
                                     "any local user can reach it and control QEMU as %s",
                                     self.monitor_port, "root")
                    ctx.add("-chardev", f"socket,id=hmp,host=127.0.0.1,port={self.monitor_port},"
                                        "server=on,wait=off", "-mon", "chardev=hmp,mode=readline")
                if self.kernel is not None:
                    ctx.add("-kernel", str(self.kernel))
                    if self.initrd is not None:
                        ctx.add("-initrd", str(self.initrd))
                    if self.append:
                        ctx.add("-append", self.append)
                self._prepare_launch(ctx)
                ctx.add(*self.extra_args)
                self.argv = list(ctx.argv)
                self._spawn(ctx, listeners, timeout)
                ctx.stack.pop_all()
        except BaseException:
            self._kill_process()
            self._cleanup()
            raise
        finally:
            for s in listeners:
                s.close()
            for fd in ctx.owned_fds:
                os.close(fd)
        self.state = State.RUNNING
        self._after_launch()

    def _memory_arg(self) -> str:
        return str(self.memory)

    def _spawn(self, ctx: LaunchContext, listeners: list[Any], timeout: float) -> None:
        log_path = ctx.run_dir / "qemu.log"
        with log_path.open("wb") as logf:
            os.chmod(log_path, 0o600)
            self.log.debug("argv: %s", ctx.argv)
            self.started_at = time.monotonic()
            try:
                self._proc = subprocess.Popen(
                    ctx.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    pass_fds=ctx.pass_fds, start_new_session=True, close_fds=True,
                    umask=0o077)
            except OSError as exc:
                raise QemuStartError(f"{self.name}: could not execute {ctx.argv[0]}: {exc}",
                                     argv=ctx.argv) from exc
        qmp_path, con_path, sh_path = (ctx.run_dir / n for n in
                                       ("qmp.sock", "serial0.sock", "shell.sock"))
        try:
            # Consoles first: QEMU waits (wait=on) for them before it runs the guest.
            self.console.attach(launch.connect_unix(con_path))
            self._shell_console.attach(launch.connect_unix(sh_path))
            self._shell = Shell(self._shell_console)
            monitor = Monitor(self.name, logger=self.log)
            monitor.connect(str(qmp_path), timeout=timeout)
            self._monitor = monitor
        except (QemuError, OSError) as exc:
            status = self._proc.poll()
            if status is None:
                time.sleep(0.2)
                status = self._proc.poll()
            raise QemuStartError(
                f"{self.name}: QEMU " + (f"exited with status {status}" if status is not None
                                         else "did not answer on QMP") + " while starting",
                argv=ctx.argv, log_tail=launch.log_tail(log_path), returncode=status) from exc

    def stop(self) -> None:
        """Stop the machine forcefully (the seed's ``stop``): QMP ``quit``, then SIGKILL.

        The guest gets no say: QEMU is told to ``quit``, which flushes what the
        guest wrote to its disks (QEMU's own caches and qcow2 metadata) and
        exits; if it has not exited :data:`STOP_GRACE` s later it is killed.
        Returns in under 2 s whatever the guest does. Always reaps QEMU and
        removes the run directory, the machine's namespace and links.
        Idempotent: stopping a stopped machine does nothing. For an orderly
        power-off that lets the guest shut down, use :meth:`shutdown`.
        """
        try:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                self._quit(proc)
        finally:
            self._kill_process()
            self._cleanup()

    def _quit(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + STOP_GRACE
        monitor = self._monitor
        if monitor is not None:
            try:
                monitor.execute("quit", timeout=STOP_GRACE / 2)
            except QemuError as exc:  # the answer may be lost as QEMU exits
                self.log.debug("quit: %s", exc)
        if launch.reap(proc, timeout=max(0.0, deadline - time.monotonic())) is None:
            self.log.warning("QEMU did not exit within %s s of quit; killing it", STOP_GRACE)

    def shutdown(self, *, timeout: float = 60.0) -> int:
        """Power the machine off gracefully: ACPI power button, then wait for QEMU to exit.

        The guest shuts down as it would when its power button is pressed; a
        frozen machine is resumed first so that it can. Once QEMU has exited,
        everything is cleaned up as by :meth:`stop`; returns QEMU's exit status.

        Raises:
            StateError: the machine is not running.
            ShutdownTimeout: the guest did not power off within ``timeout`` s (it
                ignores ACPI, or is slow); the machine is left running, so the
                caller decides: wait longer, or :meth:`stop` it.
        """
        self._require_state(State.RUNNING, State.PAUSED, action="shut down")
        monitor = self._require_monitor()
        proc = self._proc
        assert proc is not None
        if self.state == State.PAUSED:
            monitor.execute("cont", timeout=5)
            self.state = State.RUNNING
        try:
            monitor.execute("system_powerdown", timeout=5)
        except QemuError as exc:
            if proc.poll() is None:
                raise
            self.log.debug("system_powerdown: %s", exc)  # it exited meanwhile
        status = launch.reap(proc, timeout=timeout)
        if status is None:
            raise ShutdownTimeout(
                f"machine {self.name!r} did not power off within {timeout} s of the ACPI "
                "power button (does the guest handle ACPI?); it is still running: "
                "stop() ends it by force", machine=self.name, timeout=timeout)
        self.log.info("powered off (QEMU exit status %s)", status)
        self._kill_process()
        self._cleanup()
        return status

    def kill(self) -> None:
        """Stop the machine at once (SIGKILL) and clean up; idempotent."""
        self._kill_process()
        self._cleanup()

    def _kill_process(self) -> None:
        proc = self._proc
        if proc is not None:
            launch.kill_and_reap(proc)

    def _disconnect(self) -> subprocess.Popen[bytes] | None:
        """Close QMP and the consoles; hand back the process (QEMU may run on)."""
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        self.console.close()
        self._shell_console.close()
        proc, self._proc = self._proc, None
        return proc

    def _cleanup(self) -> None:
        if self._detached:
            return  # the run directory belongs to the running QEMU, not to us
        self._disconnect()
        try:
            self._teardown()
        finally:
            # Only a run directory this object made (or attached to) is removed: a
            # start refused because the name runs elsewhere must not touch it.
            if self._owns_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self._owns_run_dir = False
            self.state = State.DEFINED

    @classmethod
    def attach(cls, name: str, *, timeout: float = 10.0) -> Machine:
        """Reattach to machine ``name`` started by this or another process.

        QMP, consoles (with the serial history), the guest shell and screen work
        again. Raises :class:`NotFoundError` for an unknown machine and
        :class:`~vmanager.state.StaleRecordError` when its QEMU is gone or its pid
        was reused (never signalled).
        """
        from vmanager.state.persist import attach
        return attach(name, timeout=timeout)

    def detach(self) -> None:
        """Let go of the machine and leave it running; :meth:`attach` reaches it again."""
        from vmanager.state.persist import detach
        detach(self)

    def freeze(self) -> None:
        """Pause the guest's CPUs (QMP ``stop``)."""
        self._require_state(State.RUNNING, State.PAUSED, action="freeze")
        self.qmp("stop")
        self.state = State.PAUSED

    def unfreeze(self) -> None:
        """Resume a frozen guest (QMP ``cont``)."""
        self._require_state(State.RUNNING, State.PAUSED, action="unfreeze")
        self.qmp("cont")
        self.state = State.RUNNING

    def status(self) -> str:
        """QEMU's run state (``running``, ``paused``, ``shutdown``...)."""
        return str(self.qmp("query-status")["status"])

    def wait_for_shutdown(self, timeout: float = 60.0) -> int:
        """Wait for QEMU to exit by itself (e.g. the guest powered off); return its status."""
        proc = self._proc
        if proc is None:
            raise StateError(f"machine {self.name!r} is not running", state=self.state)
        status = launch.reap(proc, timeout=timeout)
        if status is None:
            raise QemuError(f"{self.name}: still running after {timeout} s")
        self.state = State.STOPPED
        return status

    # -- monitor ------------------------------------------------------------------
    def send(self, data: str | bytes, *, timeout: float = 60.0) -> str:
        """The seed's ``send``: ``bytes`` is a key combination, ``str`` a monitor command.

        The type decides, never the text: ``m.send(b"ctrl-alt-f2")`` presses
        those keys (switching to tty2 on a Unix guest) and returns ``""``, as
        :meth:`send_key` does; ``m.send("stop")`` runs the human monitor command
        ``stop`` (the VM pauses) and returns its output, as :meth:`monitor` does.
        After a monitor command :attr:`state` follows what it did (``stop``,
        ``cont``, ``quit``).

        Raises:
            ConfigError: ``bytes`` that are not a key combination of QEMU key
                names (the message lists them), or neither bytes nor str.
            StateError: the machine is not running.
            QMPError: QEMU refused.
        """
        if isinstance(data, bytes):
            try:
                codes = keys.parse_combo(data.decode("ascii"))
            except (UnicodeDecodeError, ConfigError) as exc:
                raise ConfigError(f"send({data!r}): bytes are a key combination such as "
                                  f"b'ctrl-alt-f2', and this is not one ({exc}); pass a str "
                                  "to run a monitor command") from exc
            self._send_codes(codes, hold_ms=100)
            return ""
        if not isinstance(data, str):
            raise ConfigError(f"send() takes bytes (a key combination) or a str (a monitor "
                              f"command), got {type(data).__name__}")
        return self.monitor(data, timeout=timeout)

    def send_key(self, combo: str, *, hold_ms: int = 100) -> None:
        """Press a key combination such as ``"ctrl-alt-del"`` (QEMU key names)."""
        self._send_codes(keys.parse_combo(combo), hold_ms=hold_ms)

    def _send_codes(self, codes: list[str], *, hold_ms: int) -> None:
        self.qmp("send-key", {"keys": [{"type": "qcode", "data": c} for c in codes],
                              "hold-time": hold_ms})

    def monitor(self, command_line: str, *, timeout: float = 60.0) -> str:
        """Run a human monitor command (``info block``...) and return its output.

        :attr:`state` follows what the command did: after ``stop`` the machine
        is paused, after ``cont`` running, after ``quit`` stopped.
        """
        if not isinstance(command_line, str):
            raise ConfigError(f"a monitor command is a str, got {type(command_line).__name__}")
        monitor = self._require_monitor()
        try:
            return monitor.hmp(command_line, timeout=timeout)
        finally:
            self._follow_run_state()

    def _follow_run_state(self) -> None:
        """Bring :attr:`state` in line with QEMU after a monitor command changed it."""
        proc, monitor = self._proc, self._monitor
        if proc is None or monitor is None or self.state not in (State.RUNNING, State.PAUSED):
            return
        try:
            running = bool(monitor.execute("query-status", timeout=5)["running"])
        except QemuError as exc:
            # "quit": QEMU is going away; is_alive() and stop() take it from here
            if launch.reap(proc, timeout=1.0) is not None:
                self.state = State.STOPPED
            self.log.debug("query-status after a monitor command: %s", exc)
            return
        self.state = State.RUNNING if running else State.PAUSED

    # -- guest shell --------------------------------------------------------------
    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        """Run ``command`` in the guest's backdoor shell (hvc0).

        Returns an :class:`ExecResult` (``status, stdout = m.execute(...)``).
        The guest must run vmanager's backdoor shell, as the tiny guest does.
        """
        self._require_state(State.RUNNING, action="execute a command")
        return self._shell.execute(command, timeout=timeout)

    def succeed(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` in the guest and return its stdout.

        Raises :class:`GuestCommandError` (status, stdout, stderr) unless it exits 0.
        """
        result = self.execute(command, timeout=timeout)
        if result.status != 0:
            raise GuestCommandError(f"{self.name}: command failed", command=command,
                                    status=result.status, output=result.stdout,
                                    stderr=result.stderr)
        return result.stdout

    def fail(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` and return its stdout; raise if it *succeeds*."""
        result = self.execute(command, timeout=timeout)
        if result.status == 0:
            raise GuestCommandError(f"{self.name}: command unexpectedly succeeded",
                                    command=command, status=0, output=result.stdout)
        return result.stdout

    def wait_until_succeeds(self, command: str, timeout: float = 60.0,
                            interval: float = 0.5) -> str:
        """Retry ``command`` until it exits 0; return its stdout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            result = self.execute(command, timeout=max(1.0, left))
            if result.status == 0:
                return result.stdout
            if time.monotonic() + interval > deadline:
                raise GuestCommandError(f"{self.name}: command did not succeed within "
                                        f"{timeout} s", command=command,
                                        status=result.status, output=result.stdout,
                                        stderr=result.stderr)
            time.sleep(interval)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the guest's backdoor shell takes commands; return seconds since start."""
        self._require_state(State.RUNNING, action="wait for the guest's shell")
        self._shell.wait_ready(timeout)
        return time.monotonic() - (self.started_at or time.monotonic())
