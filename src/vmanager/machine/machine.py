"""The Machine: one QEMU process, its monitor and consoles, and the parts it holds.

A start reads as a sequence (see :meth:`Machine.start_vm`): the recorder claims
the name -> each part prepares host objects (undo steps pushed) -> each part
fills in its fields of the :class:`~vmanager.qemu.cmdline.MachineSpec` ->
:func:`~vmanager.qemu.cmdline.build` gives the argv (pure) -> QEMU is spawned
-> consoles and QMP connect -> each part's ``after_launch`` -> the recorder
stores what ran and every part's runtime. The seed's flat methods are
delegates to the parts (:mod:`vmanager.machine.verbs`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from vmanager import paths, validate
from vmanager.errors import ConfigError, StateError
from vmanager.logkeeper import LogKeeper
from vmanager.machine import cloning, definition, process, reattach, start
from vmanager.machine import recorder as recording
from vmanager.machine.agent import AgentChannel, GuestCommands
from vmanager.machine.base import State
from vmanager.machine.boot import BootOrder
from vmanager.machine.cdrom import CdDrive
from vmanager.machine.chardevs import Chardevs
from vmanager.machine.disks import Disks
from vmanager.machine.firmware import UefiFlash, check_firmware, check_kernel
from vmanager.machine.input import Input
from vmanager.machine.memory import Memory
from vmanager.machine.migration import Migration
from vmanager.machine.nics import Nics
from vmanager.machine.part import Launch, Part
from vmanager.machine.screen import Screen
from vmanager.machine.seed import CloudInitSeed
from vmanager.machine.shell import GuestShell
from vmanager.machine.snapshots import Snapshots
from vmanager.machine.template import Templating
from vmanager.machine.verbs import SeedVerbs
from vmanager.machine.view import View
from vmanager.qemu import cmdline, launch
from vmanager.qemu.chardev import Console
from vmanager.qemu.qmp import Monitor

if TYPE_CHECKING:
    from vmanager.images.cloudinit import CloudInit
    from vmanager.machine.recorder import Recorder, RunInfo
    from vmanager.net import VirtualNic
    from vmanager.storage import CD, Harddrive

_log = logging.getLogger("vmanager.machine")

#: Seconds :meth:`Machine.stop` gives QEMU to exit after ``quit`` before SIGKILL.
STOP_GRACE = 1.5


class Machine(SeedVerbs):
    """A QEMU/KVM virtual machine.

    Arguments keep the seed's meaning: ``harddrives`` takes one
    :class:`~vmanager.Harddrive` or a list, ``nics`` a count or a list of
    :class:`~vmanager.VirtualNic`, ``cd`` one :class:`~vmanager.CD`, ``memory``
    MiB of RAM. ``kernel``/``initrd``/``append`` boot a kernel directly.
    ``accel`` is ``"auto"`` (a KVM that really works, else TCG), ``"kvm"`` or
    ``"tcg"``. ``monitor_port`` opens a human monitor on 127.0.0.1:PORT (off by
    default: anyone local could use it). ``recorder`` keeps what the machine
    ran for other processes (default: records in the state directory).
    ``guest_agent`` adds the QEMU guest agent's channel (:attr:`agent`);
    ``cloud_init`` (a :class:`~vmanager.CloudInit`) puts its NoCloud seed in the CD drive.
    ``tcg_tb_size`` caps TCG's translation buffer (MiB; it counts in QEMU's memory,
    ~50 MiB for the tiny guest at QEMU's default); ignored under KVM.
    ``firmware`` is ``"bios"`` (SeaBIOS) or ``"uefi"`` (OVMF in flash, :attr:`flash`);
    ``nvram`` keeps a UEFI machine's variable store in that file between runs.
    ``template_source=True`` keeps RAM in a file so that :meth:`save_template` can
    save the machine as a template; ``template=DIR`` makes a clone of one
    (:mod:`vmanager.machine.template`): ``start_vm()`` resumes the template's guest.

    The features are parts it holds: :attr:`disks`, :attr:`cdrom`,
    :attr:`network`, :attr:`ram`, :attr:`screen`, :attr:`input`,
    :attr:`snapshots`, :attr:`chardevs`, :attr:`boot`, :attr:`shell`,
    :attr:`migration`.

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
        tcg_tb_size: int | None = None,
        qemu_binary: str | None = None,
        extra_args: Sequence[str] = (),
        recorder: Recorder | None = None,
        guest_agent: bool = True,
        cloud_init: CloudInit | None = None,
        firmware: Literal["bios", "uefi"] = "bios",
        nvram: str | Path | None = None,
        template_source: bool = False,
        template: str | Path | None = None,
    ) -> None:
        self.name = validate.name(name, what="machine name")
        self.cpus = definition.check_cpus(cpus)
        self.accel_requested: str = definition.check_accel(accel)
        self.accel: str | None = None
        self.monitor_port = definition.check_monitor_port(monitor_port)
        self.kernel, self.initrd, self.append = definition.check_boot(kernel, initrd, append)
        self.cpu_model = cpu_model
        self.machine_type = machine_type
        self.firmware, self.nvram = check_firmware(firmware, nvram)
        check_kernel(self.firmware, self.kernel)
        self.tcg_tb_size = definition.check_tb_size(tcg_tb_size)
        self.qemu_binary = qemu_binary
        self.extra_args = list(extra_args)
        self.log = _log.getChild(self.name)
        self.state = State.DEFINED
        self.run_dir = paths.run_dir() / "machines" / self.name
        self.console = Console(f"{self.name}/serial0", logger=self.log)
        self._monitor: Monitor | None = None
        self._proc: process.Process | None = None
        self._owns_run_dir = False
        #: the serial log's keeper this process started (None after attach)
        self._log_keeper: LogKeeper | None = None
        self._detached = False
        self._recording = False
        self._recorder: Recorder = recorder if recorder is not None else recording.default()
        self.argv: list[str] = []
        view = View(self)
        # -- the parts, in the order the Machine walks them ---------------------------------
        self.flash = UefiFlash(view, self.firmware, self.nvram, lambda: self.machine_type)
        """UEFI firmware in flash (``firmware="uefi"``): its code and variable store."""
        self.shell = GuestShell(view, Console(f"{self.name}/shell", logger=self.log))
        """The guest's backdoor shell (``execute``, ``succeed``...)."""
        self.ram = Memory(view, memory)
        """RAM: DIMM hot-plug, the balloon, memory dumps."""
        self.template = Templating(view, source=template_source, template=template,
                                   memory=self.ram.size,
                                   own_disks=lambda: len(self.disks.harddrives),
                                   own_cd=lambda: self.cdrom.cd is not None)
        """File-backed RAM: a template's source, or a clone of a template."""
        self.screen = Screen(view)
        """The display: screenshots, waits for text or images, VNC."""
        self.input = Input(view, self.screen.screen_size)
        """Keyboard and tablet."""
        self.disks = Disks(view, harddrives)
        """The harddrives; ``resize``."""
        self.cdrom = CdDrive(view, cd, user=self)
        """The CD drive: ``eject``, ``change``."""
        self.network = Nics(view, nics)
        """The NICs and the machine's namespace: ``add``, ``remove``, ``set_link``."""
        self.migration = Migration(view, self._settled)
        """Live migration and saved state."""
        self.boot = BootOrder(view, disks=self.disks, cdrom=self.cdrom, nics=self.network,
                              direct_kernel=lambda: self.kernel is not None,
                              incoming=lambda: self.migration.incoming)
        """The firmware boot order."""
        self.snapshots = Snapshots(view, self.disks, lambda: self.template.disk_ids)
        """Whole-machine snapshots: ``m.snapshots()`` lists them; ``save``, ``load``, ``delete``."""
        self.chardevs = Chardevs(view)
        """Run-time chardevs: ``m.chardevs()`` lists them; ``create``, ``remove``."""
        self.agent = AgentChannel(view, enabled=guest_agent)
        self.commands = GuestCommands(view, self.shell, self.agent)
        self.seed = CloudInitSeed(view, cloud_init, self.cdrom)

    def _parts(self) -> list[Part]:
        """Every part in launch order; teardown walks it backwards.

        The boot order comes after the devices it numbers (it sets their
        ``bootindex`` in the spec); the argv's own order is :func:`cmdline.build`'s.
        """
        return [self.flash, self.shell, self.agent, self.commands, self.screen, self.input,
                self.disks, self.seed, self.cdrom, self.ram, self.template, self.migration,
                self.network, self.boot, self.snapshots, self.chardevs]

    def __repr__(self) -> str:
        return f"<Machine {self.name} {self.state.value}>"

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- definition ---------------------------------------------------------------------
    def definition(self) -> dict[str, Any]:
        """A JSON-able definition that rebuilds this machine (what records store)."""
        return definition.to_json(self)

    def spec(self, launch_: Launch, *, qemu: str) -> cmdline.MachineSpec:
        """The :class:`~vmanager.qemu.cmdline.MachineSpec` for a prepared launch (pure)."""
        return definition.spec(self, self._parts(), launch_, qemu=qemu)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The QEMU process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def started_at(self) -> float | None:
        """``time.monotonic()`` of the start (for :meth:`wait_ready`'s answer)."""
        return self.shell.started_at

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
        if self.template.info is not None and not self.migration.incoming:
            cloning.start_clone(self, timeout=timeout)
        else:
            start.start(self, timeout=timeout)

    def run_info(self) -> RunInfo:
        """What this machine runs, for its recorder (argv, process, every part's runtime)."""
        return definition.run_info(self, self._proc, self._parts())

    def _changed(self) -> None:
        if self._recording and self._proc is not None and self.state in (State.RUNNING,
                                                                          State.PAUSED):
            self._recorder.changed(self.run_info())

    def _settled(self) -> None:
        """Incoming migration arrived: the guest is up already and may be paused."""
        self.shell.launched(greeted=True)
        self.state = State.PAUSED if self.qmp("query-status")["status"] == "paused" \
            else State.RUNNING

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
                process.quit_and_reap(proc, self._monitor, grace=STOP_GRACE, log=self.log)
        finally:
            self._kill_process()
            self._cleanup()

    def shutdown(self, *, timeout: float = 60.0,
                 via: Literal["auto", "acpi", "agent"] = "auto") -> int:
        """Power the machine off gracefully: ACPI power button, then wait for QEMU to exit.

        The guest shuts down as it would when its power button is pressed; a
        frozen machine is resumed first so that it can. Once QEMU has exited,
        everything is cleaned up as by :meth:`stop`; returns QEMU's exit status.
        ``via="agent"`` asks the guest agent instead (``systemctl poweroff``); the
        default ``"auto"`` does so when guest commands already go through the
        agent, since a system that has just booted may not listen to its power
        button yet (systemd-logind starts after the agent).

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
        if via not in ("auto", "acpi", "agent"):
            raise ConfigError(f"via must be 'auto', 'acpi' or 'agent', not {via!r}")
        paused = self.state == State.PAUSED
        self.state = State.RUNNING
        agent = via == "agent" or (via == "auto" and self.commands.via == "agent")
        status = process.power_off(self.name, proc, monitor, paused=paused, timeout=timeout,
                                   log=self.log,
                                   request=self.agent.poweroff if agent else None)
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

    def _disconnect(self) -> process.Process | None:
        """Close QMP and the consoles; hand back the process (QEMU may run on)."""
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        self.console.close()
        self.shell.console.close()
        proc, self._proc = self._proc, None
        return proc

    def _cleanup(self) -> None:
        start.cleanup(self)

    # -- another process --------------------------------------------------------------------
    @classmethod
    def attach(cls, name: str, *, timeout: float = 10.0) -> Machine:
        """Reattach to machine ``name`` started by this or another process.

        Everything works again as on the object that started it: QMP, consoles
        (with the serial history), the guest shell, NICs (hot-plugged ones too),
        the CD, disks, memory, screen, snapshots and chardevs. Raises
        :class:`NotFoundError` for an unknown machine and
        :class:`~vmanager.state.StaleRecordError` when its QEMU is gone or its pid
        was reused (never signalled).
        """
        machine = recording.attach(name, timeout=timeout)
        if not isinstance(machine, Machine):
            raise TypeError(f"the registered attach returned {machine!r}, not a Machine")
        return machine

    def reconnect(self, run: RunInfo, proc: process.Process, *, timeout: float = 10.0,
                  history: bytes = b"", started: float | None = None) -> None:
        """Take over the running QEMU ``run`` describes (what :meth:`attach` uses).

        ``proc`` is the verified process; every part restores its runtime from
        ``run.parts``. On failure nothing of the running machine is touched.
        """
        reattach.reconnect(self, run, proc, timeout=timeout, history=history, started=started)

    def detach(self) -> None:
        """Let go of the machine and leave it running; :meth:`attach` reaches it again.

        Afterwards this object is inert: ``stop()`` and ``kill()`` do nothing.
        """
        reattach.detach(self)

    # -- QMP --------------------------------------------------------------------------------
    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        """Run a QMP command on the running machine and return its result."""
        return self._require_monitor().execute(command, arguments, timeout=timeout)

    def _require_monitor(self) -> Monitor:
        if self._monitor is None or self.state not in (State.RUNNING, State.PAUSED):
            raise StateError(f"machine {self.name!r} is {self.state.value}; it must be "
                             "running (start_vm() first)", state=self.state,
                             required=State.RUNNING)
        return self._monitor

    def _require_state(self, *states: State, action: str) -> None:
        if self.state not in states:
            wanted = " or ".join(s.value for s in states)
            raise StateError(f"cannot {action}: machine {self.name!r} is {self.state.value}, "
                             f"it must be {wanted}", state=self.state, required=states)

