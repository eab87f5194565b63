"""Consoles: QEMU character devices on unix sockets, drained continuously.

A socket nobody reads stalls the guest's output once a few hundred bytes are
queued, so every console is read on vmanager's I/O loop from the moment it is
connected, whether or not the user ever looks at it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import logging
import math
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from vmanager import _aio
from vmanager.errors import ConsoleTimeout, GuestCommandError, GuestError

if TYPE_CHECKING:
    from vmanager.qemu.login import SerialSession

_TAIL_LINES: Final = 30


class Console:
    """A guest console: everything the guest printed is kept, nothing is lost.

    ``read()`` returns all output so far; ``wait_for()`` searches output that
    came after the previous match (like *expect*), so successive calls find
    successive occurrences; ``write()`` types into the console.
    """

    def __init__(self, name: str, *, logger: logging.Logger | None = None) -> None:
        self.name = name
        self._log = logger or logging.getLogger(__name__)
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._pos = 0
        self._writer: asyncio.StreamWriter | None = None
        self._task: concurrent.futures.Future[None] | None = None
        self._eof = False

    def attach(self, sock: socket.socket, *, history: bytes = b"") -> None:
        """Start draining a connected socket (vmanager takes it over)."""
        with self._cond:
            self._buf[:0] = history
        self._eof = False
        sock.setblocking(False)
        ready = threading.Event()

        async def pump() -> None:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            self._writer = writer
            ready.set()
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    with self._cond:
                        self._buf += data
                        self._cond.notify_all()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with self._cond:
                    self._eof = True
                    self._cond.notify_all()
                writer.close()

        self._task = _aio.submit(pump())
        ready.wait(10)

    def close(self) -> None:
        """Stop reading; idempotent. What was read stays readable."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._writer = None

    # -- reading ------------------------------------------------------------------
    def read(self) -> str:
        """Everything the guest printed on this console so far."""
        with self._cond:
            return self._buf.decode(errors="replace")

    def read_bytes(self) -> bytes:
        """Like :meth:`read`, undecoded."""
        with self._cond:
            return bytes(self._buf)

    def tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of output."""
        return "\n".join(self.read().splitlines()[-lines:])

    def mark(self) -> int:
        """Make later :meth:`wait_for` calls look only at output from now on."""
        with self._cond:
            self._pos = len(self._buf)
            return self._pos

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 60.0) -> re.Match[str]:
        """Wait until ``pattern`` (a plain string or compiled regex) appears; return the match.

        Raises :class:`ConsoleTimeout` (with the console's tail) after ``timeout`` s.

        >>> m.console.wait_for("login:", timeout=30)  # doctest: +SKIP
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self._buf[self._pos:].decode(errors="replace")
                found = regex.search(text)
                if found is not None:
                    self._pos += len(text[:found.end()].encode(errors="replace"))
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    why = "the console closed" if self._eof else f"{timeout} s passed"
                    raise ConsoleTimeout(
                        f"{self.name}: {regex.pattern!r} did not appear ({why})",
                        tail=self.tail())
                self._cond.wait(min(left, 1.0))

    def discard_consumed(self) -> None:
        """Forget output before the last match (for protocol consoles, not the serial log)."""
        with self._cond:
            del self._buf[:self._pos]
            self._pos = 0

    # -- writing ------------------------------------------------------------------
    def write(self, data: str | bytes) -> None:
        """Send text (or bytes) to the guest, as if typed on this console."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        writer = self._writer
        if writer is None:
            raise GuestError(f"{self.name}: console is not connected")

        async def go() -> None:
            writer.write(payload)
            await writer.drain()

        _aio.run(go(), 30.0)

    def login(self, user: str, password: str | None = None, *,
              timeout: float = 120.0) -> SerialSession:
        """Log in on this console's ``login:`` prompt; return a shell session.

        ``session.execute(cmd)`` then runs commands with their output and
        status (see :mod:`vmanager.qemu.login`). Raises
        :class:`~vmanager.qemu.login.LoginError` for a wrong password.
        """
        from vmanager.qemu.login import login
        return login(self, user, password, timeout=timeout)


@dataclass(frozen=True)
class ExecResult:
    """What a command run in the guest returned. Unpacks as ``status, stdout``."""

    status: int
    stdout: str
    stderr: str

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.status, self.stdout))


class Shell:
    """The guest's machine-readable root shell on a virtio console (``hvc0``).

    The guest side reads ``<id> <limit> <base64 command>`` lines and answers
    ``@@vmresp <id> <status> O<base64 stdout> E<base64 stderr>``.
    """

    HELLO: Final = "@@vmready"

    def __init__(self, console: Console, *, expect_hello: bool = True) -> None:
        self.console = console
        self._lock = threading.Lock()
        self._expect_hello = expect_hello
        self._ready = not expect_hello
        self._ids = itertools.count(1)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the shell reads commands.

        A freshly started guest's shell says so (its hello line); for a shell
        that was up before this process connected, one command proves it.
        """
        if self._expect_hello:
            with self._lock:
                self._await_hello(timeout, "(waiting for the shell)")
        else:
            self.execute("true", timeout=timeout)

    def _await_hello(self, timeout: float, command: str) -> None:
        if self._ready:
            return
        try:
            self.console.wait_for(self.HELLO, timeout=timeout)
        except ConsoleTimeout as exc:
            raise GuestCommandError(
                "the guest's backdoor shell on hvc0 never came up (does the guest run one?)",
                command=command, status=None, output=exc.tail) from exc
        self._ready = True

    def execute(self, command: str, *, timeout: float = 60.0) -> ExecResult:
        """Run ``command`` with ``sh`` in the guest; return status, stdout and stderr.

        The guest kills the command after ``timeout`` seconds (status 137).
        Raises :class:`GuestCommandError` if no answer comes at all.
        """
        with self._lock:
            deadline = time.monotonic() + timeout
            self._await_hello(timeout, command)
            ident = f"{next(self._ids)}x{int(time.time() * 1000) % 100000}"
            limit = max(1, math.ceil(deadline - time.monotonic()))
            encoded = base64.b64encode(command.encode()).decode()
            self.console.write(f"{ident} {limit} {encoded}\n")
            regex = re.compile(rf"@@vmresp {re.escape(ident)} (\d+) O(\S*) E(\S*)\r?\n")
            try:
                found = self.console.wait_for(regex, timeout=limit + 5)
            except ConsoleTimeout as exc:
                raise GuestCommandError("no answer from the guest's shell", command=command,
                                        status=None, output="") from exc
            self.console.discard_consumed()
            status = int(found.group(1))
            out = base64.b64decode(found.group(2)).decode(errors="replace")
            err = base64.b64decode(found.group(3)).decode(errors="replace")
            return ExecResult(status, out, err)
