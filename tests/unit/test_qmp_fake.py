"""The Monitor against a fake QMP peer over a socketpair (no QEMU involved)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from vmanager.errors import QemuError, QMPError
from vmanager.qemu.qmp import MAX_EVENTS, Monitor

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": []}}


class FakeQemu(threading.Thread):
    """Speaks enough QMP: greeting, capabilities, a few commands, an event."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.received: list[dict[str, object]] = []

    def send(self, obj: object) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\r\n")

    def messages(self) -> Iterator[dict[str, object]]:
        # QMP clients need not end messages with a newline: decode a JSON stream.
        decoder, buf = json.JSONDecoder(), ""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk.decode()
            while buf.strip():
                try:
                    obj, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                yield obj

    def run(self) -> None:
        self.send(GREETING)
        for msg in self.messages():
            self.received.append(msg)
            cmd, ident = msg.get("execute"), msg.get("id")
            if cmd == "qmp_capabilities":
                self.send({"return": {}, "id": ident})
            elif cmd == "query-status":
                self.send({"return": {"status": "running", "running": True}, "id": ident})
            elif cmd == "human-monitor-command":
                line_ = msg["arguments"]["command-line"]  # type: ignore[index]
                self.send({"return": f"you said {line_}\r\n", "id": ident})
            elif cmd == "stop":
                self.send({"event": "STOP", "data": {},
                           "timestamp": {"seconds": 1, "microseconds": 0}})
                self.send({"return": {}, "id": ident})
            elif cmd == "x-flood":  # a guest making QEMU emit events without end
                count = int(msg["arguments"]["count"])  # type: ignore[index]
                batch = b"".join(json.dumps({"event": "RTC_CHANGE", "data": {"offset": i},
                                             "timestamp": {"seconds": 1, "microseconds": 0}}
                                            ).encode() + b"\r\n" for i in range(count))
                self.sock.sendall(batch)
                self.send({"event": "STOP", "data": {},
                           "timestamp": {"seconds": 1, "microseconds": 0}})
                self.send({"return": {}, "id": ident})
            elif cmd == "quit":
                self.send({"return": {}, "id": ident})
                self.sock.close()
                return
            else:
                self.send({"error": {"class": "CommandNotFound",
                                     "desc": f"The command {cmd} has not been found"},
                           "id": ident})


@pytest.fixture
def fake() -> Iterator[tuple[Monitor, FakeQemu]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    peer = FakeQemu(theirs)
    peer.start()
    mon = Monitor("fake")
    mon.connect(ours, timeout=5)
    yield mon, peer
    mon.close()
    ours.close()
    theirs.close()


def test_negotiates_and_runs_commands(fake: tuple[Monitor, FakeQemu]) -> None:
    mon, peer = fake
    assert mon.execute("query-status") == {"status": "running", "running": True}
    assert peer.received[0]["execute"] == "qmp_capabilities"


def test_hmp_returns_text(fake: tuple[Monitor, FakeQemu]) -> None:
    mon, _ = fake
    assert mon.hmp("info status").strip() == "you said info status"


def test_failed_command_is_a_qmp_error_with_class_and_description(
        fake: tuple[Monitor, FakeQemu]) -> None:
    mon, _ = fake
    with pytest.raises(QMPError) as info:
        mon.execute("no-such-command")
    assert info.value.error_class == "CommandNotFound"
    assert "no-such-command" in info.value.description
    assert info.value.command == "no-such-command"


def test_events_are_recorded_and_awaitable(fake: tuple[Monitor, FakeQemu]) -> None:
    mon, _ = fake
    mark = mon.event_mark()
    mon.execute("stop")
    assert mon.wait_event("STOP", timeout=5, since=mark)["event"] == "STOP"
    with pytest.raises(QemuError, match="no RESUME event"):
        mon.wait_event("RESUME", timeout=0.2, since=mark)


def test_a_vanished_peer_is_a_qemu_error_not_a_library_one(
        fake: tuple[Monitor, FakeQemu]) -> None:
    mon, _ = fake
    mon.execute("quit")
    with pytest.raises(QemuError):
        mon.execute("query-status", timeout=5)


def test_the_event_history_is_bounded_and_marks_stay_valid(
        fake: tuple[Monitor, FakeQemu]) -> None:
    mon, _ = fake
    mark = mon.event_mark()
    mon.execute("x-flood", {"count": 3 * MAX_EVENTS}, timeout=60)
    assert mon.wait_event("STOP", timeout=30, since=mark)["event"] == "STOP"
    assert len(mon.events()) <= MAX_EVENTS * 5 // 4
    assert mon.event_mark() == mark + 3 * MAX_EVENTS + 1
    assert mon.events(mon.event_mark() - 1)[0]["event"] == "STOP"
