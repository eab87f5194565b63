"""The QEMU guest agent's channel (``m.agent``) and the choice of how guest commands run.

Every machine gets a virtio-serial port ``org.qemu.guest_agent.0`` on a unix
socket in its private run directory unless ``guest_agent=False``; a guest that
runs ``qemu-ga`` (any cloud image does) answers on it. :class:`AgentChannel` is
the part that adds the port and *is* the client (:class:`~vmanager.qemu.agent.GuestAgent`),
refusing calls while the machine is not running.

:class:`GuestCommands` is what ``m.execute()``, ``m.succeed()``, ``m.fail()``,
``m.wait_until_succeeds()`` and ``m.wait_ready()`` call: it uses the backdoor
shell when the guest has one (vmanager's own guests) and the agent otherwise
(real systems), with the same :class:`~vmanager.qemu.chardev.ExecResult` and
the same errors either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from vmanager.errors import AgentError, GuestCommandError, StateError
from vmanager.machine.base import State
from vmanager.machine.guest_exec import CommandVerbs
from vmanager.machine.part import Launch, MachineView, Part
from vmanager.qemu import launch as _launch
from vmanager.qemu.agent import GuestAgent
from vmanager.qemu.chardev import ExecResult

if TYPE_CHECKING:
    from vmanager.machine.shell import GuestShell
    from vmanager.qemu.cmdline import MachineSpec

#: The agent's socket in the machine's run directory.
AGENT_SOCKET = "qga.sock"
Channel = Literal["shell", "agent"]


class AgentChannel(GuestAgent, Part):
    """The guest agent of one machine: ``m.agent.exec([...])``, ``m.agent.os_info()``...

    Calls raise :class:`StateError` unless the machine runs and has the channel
    (``guest_agent=True``, the default); see :class:`~vmanager.qemu.agent.GuestAgent`
    for the calls and their errors.
    """

    key = "agent"

    def __init__(self, vm: MachineView, *, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            from vmanager.errors import ConfigError
            raise ConfigError(f"guest_agent must be True or False, got {enabled!r}")
        super().__init__(lambda: self._connect_socket(), name=vm.name, logger=vm.log)
        self._vm = vm
        self.enabled = enabled
        self._fd: int | None = None

    @property
    def path(self) -> str:
        """The agent's unix socket (owner-only, in the machine's run directory)."""
        return str(self._vm.run_dir / AGENT_SOCKET)

    def _connect_socket(self) -> Any:
        return _launch.connect_unix(self._vm.run_dir / AGENT_SOCKET)

    def call(self, command: str, arguments: dict[str, Any] | None = None, *,
             timeout: float = 30.0) -> Any:
        """One agent command (see :meth:`GuestAgent.call`); the machine must run."""
        if not self.enabled:
            raise StateError(f"machine {self._vm.name!r} has no guest agent channel "
                             "(it was made with guest_agent=False)", state="no agent")
        self._vm.require(State.RUNNING, action=f"talk to the guest agent ({command})")
        return super().call(command, arguments, timeout=timeout)

    def poweroff(self) -> None:
        """Ask the guest to power off through the agent, also early in its boot.

        qemu-ga's own ``guest-shutdown`` runs ``shutdown -P +0``, which needs
        logind on D-Bus and is lost while a systemd guest is still booting;
        ``systemctl poweroff`` talks to systemd directly. So that is started
        (not waited for: the agent goes down with the guest), with
        ``shutdown``/``poweroff`` for other Unix guests, and ``guest-shutdown``
        where the guest cannot run it.
        """
        try:
            self.call("guest-exec", {"path": "/bin/sh", "arg": [
                "-c", "systemctl poweroff || shutdown -P now || poweroff"]})
        except AgentError as exc:
            self._vm.log.info("guest-exec of poweroff failed (%s); trying guest-shutdown", exc)
            self.shutdown("powerdown")

    def answers(self, timeout: float) -> bool:
        """Whether the agent answers a ping within ``timeout`` s (never raises AgentError)."""
        try:
            self.ping(timeout=timeout)
        except AgentError:
            return False
        return True

    # -- the part's hooks ----------------------------------------------------------------
    def prepare(self, launch: Launch) -> None:
        """Listen on the agent's socket; QEMU inherits it."""
        self.close()
        if not self.enabled:
            return
        sock = _launch.listen_unix(launch.run_dir / AGENT_SOCKET)
        fd = sock.detach()
        self._fd = fd
        launch.pass_fds.append(fd)
        launch.owned_fds.append(fd)

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """The virtio-serial port ``org.qemu.guest_agent.0``."""
        if not self.enabled or self._fd is None:
            return spec
        return replace(spec, agent_fd=self._fd)

    def after_launch(self) -> None:
        """The fd went to QEMU (the machine closes its copy)."""
        self._fd = None

    def teardown(self) -> None:
        """Drop the connection (QEMU and its socket are gone)."""
        self._fd = None
        self.close()

    def release(self) -> None:
        """Let go of the connection; the running QEMU keeps the channel."""
        self.close()

    def runtime(self) -> dict[str, Any]:
        """Whether the machine has the channel."""
        return {"enabled": self.enabled}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """A reattached machine's channel (connected on first use)."""
        self.enabled = bool(runtime.get("enabled", self.enabled))
        self.close()


class GuestCommands(CommandVerbs, Part):
    """Guest commands over the backdoor shell when there is one, else the guest agent."""

    key = "commands"

    def __init__(self, vm: MachineView, shell: GuestShell, agent: AgentChannel) -> None:
        self._vm = vm
        self._shell = shell
        self._agent = agent
        self.via: Channel | None = None

    def after_launch(self) -> None:
        """A new guest: find out again which channel answers."""
        self.via = None

    def teardown(self) -> None:
        """Forget the channel."""
        self.via = None

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """A reattached machine: the channel is found again on first use."""
        self.via = None

    def channel(self, timeout: float, *, command: str = "(waiting for the guest)") -> Channel:
        """Wait until the backdoor shell or the agent answers; return which one.

        Both are watched at once: the shell's hello is waited for here while a
        helper thread pings the agent, so neither kind of guest waits for the
        other's timeout.
        """
        if self.via is not None:
            return self.via
        deadline = time.monotonic() + timeout
        agent_up = threading.Event()
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    if self._agent.answers(max(0.1, min(2.0, deadline - time.monotonic()))):
                        agent_up.set()
                        return
                except StateError:
                    return  # the machine stopped; the shell side notices too
                stop.wait(0.2)

        prober = None
        if self._agent.enabled:
            prober = threading.Thread(target=probe, name=f"{self._vm.name}-agent-probe",
                                      daemon=True)
            prober.start()
        # A restored guest's shell is proven by a command, not a hello: wait longer
        # each round, so a slow shell still answers while an agent is not held up.
        shell_wait = 0.2
        try:
            while True:
                if agent_up.is_set():
                    self.via = "agent"
                elif self._shell.answers(max(0.01, min(shell_wait, deadline - time.monotonic()))):
                    self.via = "shell"
                elif agent_up.is_set():
                    self.via = "agent"
                elif time.monotonic() >= deadline:
                    what = ("the backdoor shell nor the guest agent"
                            if self._agent.enabled else "the backdoor shell (the "
                            "machine has no guest agent channel)")
                    raise GuestCommandError(f"{self._vm.name}: neither {what} answered "
                                            f"within {timeout} s", command=command,
                                            status=None, output="")
                else:
                    self._vm.require(State.RUNNING, action="wait for the guest")
                    if not self._shell.expects_hello:
                        shell_wait = min(shell_wait * 2, 5.0)
                    continue
                self._vm.log.info("guest commands go through the %s", self.via)
                return self.via
        finally:
            stop.set()
            if prober is not None and prober.is_alive():
                # The shell won (or the wait failed): wake the probe from its
                # read, so it neither lingers nor holds the agent up for seconds.
                self._agent.close()
                prober.join(1.0)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the backdoor shell or the guest agent answers; seconds since start."""
        self._vm.require(State.RUNNING, action="wait for the guest")
        self.channel(timeout)
        started = self._shell.started_at
        return time.monotonic() - (started if started is not None else time.monotonic())

    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        """Run ``command`` under ``/bin/sh -c`` in the guest; status, stdout, stderr.

        Through the backdoor shell when the guest has one, else the guest agent;
        either kills the command after ``timeout`` s (status 137). Raises
        :class:`GuestCommandError` when neither answers.
        """
        self._vm.require(State.RUNNING, action="execute a command")
        started = time.monotonic()
        if self.channel(timeout, command=command) == "shell":
            return self._shell.execute(command, timeout=timeout)
        left = max(1.0, timeout - (time.monotonic() - started))
        try:
            # "--": a command string that starts with "-" is not taken for options
            out = self._agent.exec(["/bin/sh", "-c", "--", command], timeout=left)
        except AgentError as exc:
            raise GuestCommandError(f"{self._vm.name}: no answer from the guest agent: {exc}",
                                    command=command, status=None, output="") from exc
        return ExecResult(out.status, out.stdout.decode(errors="replace"),
                          out.stderr.decode(errors="replace"))

    def thaw_after_load(self) -> None:
        """After a snapshot is loaded: thaw file systems a quiesced snapshot left frozen."""
        if self.via != "agent":
            return
        self._agent.close()  # the restored agent knows nothing of this connection
        try:
            if self._agent.fsfreeze_status() == "frozen":
                self._agent.fsthaw()
        except AgentError as exc:
            self._vm.log.warning("after loading a snapshot: cannot thaw: %s", exc)


__all__ = ["AGENT_SOCKET", "AgentChannel", "GuestCommands"]
