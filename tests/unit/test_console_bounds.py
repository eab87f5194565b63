"""Consoles and the shell channel against a fake guest on a socketpair.

What a guest prints is untrusted: invalid UTF-8 must not shift positions,
history and logs are bounded, error messages carry only the end, and a
malformed or oversized shell reply is a GuestCommandError.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from vmanager.errors import ConsoleTimeout, GuestCommandError
from vmanager.qemu.chardev import Console, Shell


@pytest.fixture
def wire() -> Iterator[tuple[Console, socket.socket]]:
    """A console attached to one end of a socketpair; the test plays the guest."""
    ours, guest = socket.socketpair()
    console = Console("fake/serial0", history_limit=64 * 1024)
    console.attach(ours)
    yield console, guest
    console.close()
    guest.close()


def test_text_after_invalid_utf8_is_not_skipped(wire: tuple[Console, socket.socket]) -> None:
    console, guest = wire
    guest.sendall(b"\xff\xfeA\nB-after-garbage\n")
    console.wait_for("A", timeout=5)
    assert console.wait_for("B-after-garbage", timeout=5).group(0) == "B-after-garbage"


def test_a_character_split_across_reads_decodes_whole(wire: tuple[Console, socket.socket]) -> None:
    console, guest = wire
    guest.sendall(b"caf" + "é".encode()[:1])
    time.sleep(0.2)
    guest.sendall("é".encode()[1:] + b" done\n")
    assert console.wait_for("café done", timeout=5)
    assert "\ufffd" not in console.read()


def test_history_is_bounded_and_keeps_the_end(wire: tuple[Console, socket.socket]) -> None:
    console, guest = wire
    line = b"x" * 1023 + b"\n"
    for _ in range(1024):  # 1 MiB through a 64 KiB history
        guest.sendall(line)
    guest.sendall(b"THE-END\n")
    console.wait_for("THE-END", timeout=30)
    assert len(console.read()) <= 64 * 1024 * 5 // 4
    assert len(console.read_bytes()) <= 64 * 1024 * 5 // 4
    assert console.read().endswith("THE-END\n")
    assert console.offset == 1024 * 1024 + 8


def test_read_since_an_offset_survives_trimming(wire: tuple[Console, socket.socket]) -> None:
    console, guest = wire
    start = console.offset
    guest.sendall(b"y" * 200_000 + b"tail-bytes")
    console.wait_for("tail-bytes", timeout=10)
    data, end = console.read_since(start)
    assert end == start + 200_010 and data.endswith(b"tail-bytes")
    assert console.read_since(end) == (b"", end)


def test_a_timeout_message_carries_only_the_end(wire: tuple[Console, socket.socket]) -> None:
    console, guest = wire
    guest.sendall(b"z" * 60_000)  # one long line
    time.sleep(0.3)
    with pytest.raises(ConsoleTimeout) as err:
        console.wait_for("never", timeout=0.5)
    assert len(str(err.value)) < 8192


class FakeShellGuest:
    """Reads one command line from the shell channel and answers ``reply(ident)``."""

    def __init__(self, sock: socket.socket, reply: Callable[[str], bytes]) -> None:
        self.sock, self.reply = sock, reply
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = b""
        while b"\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                return
            buf += chunk
        ident = buf.lstrip(b"\n").split(b" ", 1)[0].decode()
        data = self.reply(ident)
        for i in range(0, len(data), 65536):
            try:
                self.sock.sendall(data[i:i + 65536])
            except OSError:
                return


def _shell(wire: tuple[Console, socket.socket], reply: Callable[[str], bytes]) -> Shell:
    console, guest = wire
    FakeShellGuest(guest, reply)
    return Shell(console, expect_hello=False)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()




@pytest.mark.parametrize("reply", [
    "@@vmresp {i} " + "9" * 5000 + " O E\n",                 # a 5000-digit status
    "@@vmresp {i} 256 O E\n",                                 # not an exit status
    "@@vmresp {i} -1 O E\n",
    "@@vmresp {i} 0 Onot*base64 E\n",                        # bad base64
    "@@vmresp {i} 0 OQQ E\n",                                 # bad padding
    "@@vmresp {i} 0 O E%%%\n",
])
def test_a_malformed_reply_is_a_guest_command_error(wire: tuple[Console, socket.socket],
                                                    reply: str) -> None:
    shell = _shell(wire, lambda i: reply.replace("{i}", i).encode())
    with pytest.raises(GuestCommandError, match="malformed reply"):
        shell.execute("true", timeout=5)


def test_a_reply_larger_than_the_history_fails_at_once(
        wire: tuple[Console, socket.socket]) -> None:
    big = b"A" * (512 * 1024)
    shell = _shell(wire, lambda i: f"@@vmresp {i} 0 O".encode() + big + b" E\n")
    started = time.monotonic()
    with pytest.raises(GuestCommandError, match="larger than"):
        shell.execute("cat /dev/zero", timeout=60)
    assert time.monotonic() - started < 30, "waited for the timeout instead"


def test_status_and_output_of_a_good_reply(wire: tuple[Console, socket.socket]) -> None:
    shell = _shell(wire, lambda i: f"@@vmresp {i} 3 O{b64('out')} E{b64('err')}\n".encode())
    result = shell.execute("whatever", timeout=5)
    assert (result.status, result.stdout, result.stderr) == (3, "out", "err")


def test_proving_a_restored_shell_waits_only_as_long_as_asked(
        wire: tuple[Console, socket.socket]) -> None:
    """A restored real OS has no backdoor shell: asking it must not cost 6 s a round."""
    console, _guest = wire  # nothing reads or answers on the guest side
    shell = Shell(console, expect_hello=False)
    assert not shell.expects_hello
    started = time.monotonic()
    with pytest.raises(GuestCommandError, match="no answer"):
        shell.wait_ready(0.3)
    assert time.monotonic() - started < 3, "waited the guest's limit + 5 s"
