"""Live migration between two machines and saving / restoring state through a file."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from vmanager import Machine, State
from vmanager.errors import ConfigError, NotFoundError
from vmanager.machine.state import MigrationProgress

pytestmark = pytest.mark.guest

MakeMachine = Callable[..., Machine]


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_migrate_moves_the_running_guest(make_machine: MakeMachine, transport: str) -> None:
    src = make_machine()
    dst = make_machine()
    src.start_vm()
    src.wait_ready(120)
    marker = f"ram-{secrets.token_hex(6)}"
    src.succeed(f"echo {marker} > /tmp/marker; echo $$ > /tmp/pid-before")
    seen: list[MigrationProgress] = []
    result = src.migrate(dst, transport=transport, progress=seen.append)
    assert result.transferred > 0 and result.target == dst.name
    assert seen and seen[-1].status in ("active", "device", "completed")
    assert not src.is_alive() and src.state == State.DEFINED
    assert dst.state == State.RUNNING and dst.status() == "running"
    assert dst.succeed("cat /tmp/marker").strip() == marker
    # The guest keeps running there: time advances and new commands run.
    first = float(dst.succeed("cut -d' ' -f1 /proc/uptime"))
    dst.wait_until_succeeds(f"[ $(cut -d. -f1 /proc/uptime) -gt {int(first)} ]", timeout=30)


def test_migrate_to_a_different_machine_is_refused(make_machine: MakeMachine,
                                                   tmp_path: Path) -> None:
    src = make_machine()
    dst = make_machine(memory=320)
    src.start_vm()
    src.wait_ready(120)
    src.succeed("echo still-here > /tmp/marker")
    with pytest.raises(ConfigError, match="memory differs"):
        src.migrate(dst)
    assert not dst.is_alive()
    assert src.status() == "running"
    assert src.succeed("cat /tmp/marker").strip() == "still-here"
    # A run-time device the target lacks is named.
    src.create_chardev("socket", port_name="org.vmanager.extra", chardev_id="extra")
    other = make_machine()
    with pytest.raises(ConfigError, match=r"lacks extra-port \(virtserialport\)"):
        src.migrate(other)
    assert src.succeed("cat /tmp/marker").strip() == "still-here"


def test_save_and_restore_state(make_machine: MakeMachine, tmp_path: Path) -> None:
    name = f"sv{secrets.token_hex(3)}"
    src = make_machine(name)
    src.start_vm()
    src.wait_ready(120)
    marker = f"saved-{secrets.token_hex(6)}"
    src.succeed(f"echo {marker} > /tmp/marker")
    state = tmp_path / "machine.state"
    result = src.save_state(state)
    assert state.is_file() and result.transferred > 0
    assert not src.is_alive()
    assert [p.name for p in tmp_path.iterdir()] == ["machine.state"]

    src.restore_state(state)
    assert src.status() == "running"
    assert src.succeed("cat /tmp/marker").strip() == marker

    with pytest.raises(NotFoundError):
        make_machine().restore_state(tmp_path / "nope.state")


def test_tcp_migration_refuses_a_local_peer_without_the_key(
        make_machine: MakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever connects to the TCP listener first must not get to feed the destination.

    A local process connects before the source and sends a migration stream's
    header. Without authentication QEMU takes that first connection as the
    migration and fails on it; with the one-time TLS key it refuses the
    stranger's handshake and the real migration arrives.
    """
    import socket

    from vmanager.machine import migration

    src, dst = make_machine(), make_machine()
    src.start_vm()
    src.wait_ready(120)
    marker = f"ram-{secrets.token_hex(6)}"
    src.succeed(f"echo {marker} > /tmp/marker")
    real = migration._incoming_tcp_uri
    rogue: list[socket.socket] = []

    def hijack(m: Machine) -> str:
        uri = real(m)  # the destination listens: a local user connects first
        port = int(uri.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"QEVM\x00\x00\x00\x03" + b"\x00" * 64)  # a migration stream's header
        rogue.append(s)
        return uri

    monkeypatch.setattr(migration, "_incoming_tcp_uri", hijack)
    try:
        src.migrate(dst, transport="tcp", timeout=120)
    finally:
        for s in rogue:
            s.close()
    assert rogue, "the stranger never connected"
    assert dst.succeed("cat /tmp/marker").strip() == marker
