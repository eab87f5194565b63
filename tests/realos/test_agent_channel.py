"""The agent channel every machine gets, seen from a guest without an agent (the tiny
guest): commands still go through its backdoor shell, the agent times out cleanly, and
guest_agent=False leaves the port out."""

from __future__ import annotations

import pytest

from vmanager import Machine
from vmanager.errors import AgentTimeout, ConfigError, StateError
from vmanager.guests import TinyGuest
from vmtest_util import unique_name

pytestmark = pytest.mark.guest


def test_shell_guest_uses_the_shell_and_the_agent_times_out(shared_machine: Machine) -> None:
    m = shared_machine
    assert "org.qemu.guest_agent.0" in " ".join(m.argv)
    assert m.succeed("echo via-shell").strip() == "via-shell"
    assert m.commands.via == "shell"
    # the port exists in the guest, but nothing there answers on it
    assert "org.qemu.guest_agent.0" in m.succeed("cat /sys/class/virtio-ports/*/name")
    with pytest.raises(AgentTimeout):
        m.agent.ping(timeout=1.5)
    assert m.succeed("echo still-fine").strip() == "still-fine"


def test_no_agent_channel_when_disabled(tiny: TinyGuest) -> None:
    name = unique_name()
    m = Machine(name, guest_agent=False, **tiny.machine_args(name))
    try:
        with pytest.raises(StateError, match="guest_agent=False"):
            m.agent.ping()
        m.start_vm()
        assert "qga0" not in " ".join(m.argv)
        assert m.wait_ready(120) > 0
    finally:
        m.kill()
    with pytest.raises(ConfigError):
        Machine(unique_name(), guest_agent="yes", **tiny.machine_args())  # type: ignore[arg-type]


def test_agent_refuses_while_stopped(tiny: TinyGuest) -> None:
    m = Machine(unique_name(), **tiny.machine_args())
    with pytest.raises(StateError, match="running"):
        m.agent.ping()
