"""The guest agent client against a fake qemu-ga over a socketpair (no QEMU involved).

The fake behaves like qemu-ga 7.2 where it matters: a 0xFF byte from the client
yields a parse error answer, ``guest-sync-delimited`` answers 0xFF + the id, and
answers to commands sent before the client connected are still in the channel.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vmanager.errors import AgentError, AgentTimeout
from vmanager.qemu.agent import KILLED_STATUS, MAX_LINE, GuestAgent

Handler = Callable[[dict[str, Any]], Any]


class FakeAgent(threading.Thread):
    def __init__(self, sock: socket.socket, handlers: dict[str, Handler],
                 stale: bytes = b"") -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.handlers = handlers
        self.received: list[dict[str, Any]] = []
        self.sock.sendall(stale)  # what an earlier client left unread

    def reply(self, data: bytes) -> None:
        # OSError: the client gave up on this answer and closed its end.
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                if buf.startswith(b"\xff"):
                    buf = buf[1:]
                    self.reply(b'{"error": {"class": "GenericError", '
                               b'"desc": "JSON parse error, stray \'\\uFFFD\'"}}\n')
                    continue
                end = buf.find(b"\n")
                if end < 0:
                    break
                msg, buf = json.loads(buf[:end]), buf[end + 1:]
                self.received.append(msg)
                name = msg["execute"]
                if name == "guest-sync-delimited":
                    self.reply(b"\xff" + json.dumps(
                        {"return": msg["arguments"]["id"]}).encode() + b"\n")
                    continue
                handler = self.handlers.get(name)
                if handler is None:
                    self.reply(json.dumps({"error": {"class": "CommandNotFound",
                                                     "desc": f"no {name}"}}).encode() + b"\n")
                    continue
                result = handler(msg.get("arguments", {}))
                if isinstance(result, bytes):
                    self.reply(result)
                elif result is not Ellipsis:
                    self.reply(json.dumps({"return": result}).encode() + b"\n")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def start(pair: tuple[socket.socket, socket.socket], handlers: dict[str, Handler],
          stale: bytes = b"") -> tuple[GuestAgent, FakeAgent]:
    fake = FakeAgent(pair[1], handlers, stale)
    fake.start()
    return GuestAgent(lambda: pair[0], name="fake"), fake


def test_stale_answers_before_sync_are_skipped(pair: tuple[socket.socket, socket.socket]) -> None:
    stale = (b'{"return": {"pid": 99}}\n\xff{"return": 7}\n{"return": "thawed"}\n'
             b"garbage that is not json\n")
    agent, fake = start(pair, {"guest-ping": lambda a: {}}, stale=stale)
    agent.ping(timeout=5)
    assert fake.received[-1] == {"execute": "guest-ping"}
    assert fake.received[0]["execute"] == "guest-sync-delimited"


def test_exec_decodes_output_and_status(pair: tuple[socket.socket, socket.socket]) -> None:
    polls = []

    def status(args: dict[str, Any]) -> Any:
        polls.append(args["pid"])
        if len(polls) < 3:
            return {"exited": False}
        return {"exited": True, "exitcode": 3, "out-data": base64.b64encode(b"hi\n").decode(),
                "err-data": base64.b64encode(b"oops").decode()}
    agent, fake = start(pair, {"guest-exec": lambda a: {"pid": 42},
                               "guest-exec-status": status})
    out = agent.exec(["/bin/sh", "-c", "echo hi; exit 3"], input=b"in")
    assert (out.status, out.stdout, out.stderr) == (3, b"hi\n", b"oops")
    sent = next(m for m in fake.received if m["execute"] == "guest-exec")["arguments"]
    assert sent["path"] == "/bin/sh" and sent["arg"] == ["-c", "echo hi; exit 3"]
    assert base64.b64decode(sent["input-data"]) == b"in"
    assert polls == [42, 42, 42]


def test_exec_signal_and_kill_after_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    killed = threading.Event()

    def exec_(args: dict[str, Any]) -> Any:
        if args["arg"][-1] == "5" and "kill -KILL" in args["arg"][1]:
            killed.set()
            return {"pid": 6}
        return {"pid": 5}

    def status(args: dict[str, Any]) -> Any:
        return {"exited": True, "signal": 9} if killed.is_set() else {"exited": False}
    agent, _ = start(pair, {"guest-exec": exec_, "guest-exec-status": status})
    out = agent.exec(["sleep", "100"], timeout=0.3)
    assert out.status == KILLED_STATUS and killed.is_set()


@pytest.mark.parametrize("bad", [
    {"exited": True, "exitcode": "0"},
    {"exited": True, "exitcode": 0, "out-data": "not*base64!"},
    {"exited": True, "exitcode": True},
])
def test_exec_rejects_malformed_status(pair: tuple[socket.socket, socket.socket],
                                       bad: dict[str, Any]) -> None:
    agent, _ = start(pair, {"guest-exec": lambda a: {"pid": 1},
                            "guest-exec-status": lambda a: bad})
    with pytest.raises(AgentError):
        agent.exec(["true"])


def test_error_answer_carries_class(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, _ = start(pair, {})
    with pytest.raises(AgentError) as info:
        agent.call("guest-nonsense")
    assert info.value.error_class == "CommandNotFound"
    assert info.value.command == "guest-nonsense"


def test_timeout_drops_the_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, _ = start(pair, {"guest-ping": lambda a: ...})
    started = time.monotonic()
    with pytest.raises(AgentTimeout):
        agent.ping(timeout=0.5)
    assert time.monotonic() - started < 3
    assert agent._sock is None


def test_oversized_line_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    big = b'{"return": "' + b"A" * (MAX_LINE + 100)

    agent, _ = start(pair, {"guest-get-osinfo": lambda a: big})
    with pytest.raises(AgentError, match="longer than"):
        agent.os_info()


def test_non_object_answer(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, _ = start(pair, {"guest-ping": lambda a: b"[1, 2]\n"})
    with pytest.raises(AgentError, match="non-object"):
        agent.ping()


def test_file_read_write_roundtrip(pair: tuple[socket.socket, socket.socket]) -> None:
    files: dict[str, bytearray] = {"/etc/motd": bytearray(b"x" * 3_000_000)}
    handles: dict[int, tuple[str, int]] = {}

    def open_(args: dict[str, Any]) -> int:
        if args["mode"] == "w":
            files[args["path"]] = bytearray()
        handles[len(handles) + 1] = (args["path"], 0)
        return len(handles)

    def read(args: dict[str, Any]) -> Any:
        path, pos = handles[args["handle"]]
        chunk = bytes(files[path][pos:pos + args["count"]])
        handles[args["handle"]] = (path, pos + len(chunk))
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(),
                "eof": pos + len(chunk) >= len(files[path])}

    def write(args: dict[str, Any]) -> Any:
        path, _ = handles[args["handle"]]
        data = base64.b64decode(args["buf-b64"])
        files[path] += data
        return {"count": len(data), "eof": False}
    agent, fake = start(pair, {"guest-file-open": open_, "guest-file-read": read,
                               "guest-file-write": write, "guest-file-flush": lambda a: {},
                               "guest-file-close": lambda a: {}})
    assert agent.read_file("/etc/motd") == b"x" * 3_000_000
    with pytest.raises(AgentError, match="larger than"):
        agent.read_file("/etc/motd", max_bytes=1000)
    agent.write_file("/tmp/f", b"\x00\xffdata" * 300_000)
    assert bytes(files["/tmp/f"]) == b"\x00\xffdata" * 300_000
    closes = [m for m in fake.received if m["execute"] == "guest-file-close"]
    assert len(closes) == 3  # every handle is closed, also after the size error


def test_read_count_mismatch_is_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, _ = start(pair, {"guest-file-open": lambda a: 1, "guest-file-close": lambda a: {},
                            "guest-file-read": lambda a: {"count": 5, "buf-b64": "YQ==",
                                                          "eof": True}})
    with pytest.raises(AgentError, match="count"):
        agent.read_file("/x")


def test_interfaces_osinfo_time_freeze(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, fake = start(pair, {
        "guest-network-get-interfaces": lambda a: [
            {"name": "ens3", "hardware-address": "52:54:00:12:34:56",
             "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.0.5",
                               "prefix": 24}]},
            {"name": "lo"}, "junk"],
        "guest-get-osinfo": lambda a: {"id": "debian", "version-id": "12", "name": "Debian"},
        "guest-get-time": lambda a: 1_700_000_000_500_000_000,
        "guest-set-time": lambda a: {},
        "guest-fsfreeze-freeze": lambda a: 2, "guest-fsfreeze-thaw": lambda a: 2,
        "guest-shutdown": lambda a: ...})
    ifaces = agent.network_interfaces()
    assert ifaces[0].name == "ens3" and ifaces[0].addresses[0].address == "10.0.0.5"
    assert ifaces[1].name == "lo" and ifaces[1].addresses == () and len(ifaces) == 2
    info = agent.os_info()
    assert (info.id, info.version_id, info.kernel_release) == ("debian", "12", "")
    assert agent.get_time() == pytest.approx(1_700_000_000.5)
    agent.sync_time()
    assert abs(fake.received[-1]["arguments"]["time"] / 1e9 - time.time()) < 5
    with agent.frozen() as count:
        assert count == 2
    assert [m["execute"] for m in fake.received[-2:]] == ["guest-fsfreeze-freeze",
                                                          "guest-fsfreeze-thaw"]
    agent.shutdown()
    with pytest.raises(AgentError):
        agent.shutdown("explode")


def test_channel_closed_is_an_agent_error(pair: tuple[socket.socket, socket.socket]) -> None:
    agent = GuestAgent(lambda: pair[0], name="fake")
    pair[1].close()
    with pytest.raises(AgentError):
        agent.ping(timeout=2)
