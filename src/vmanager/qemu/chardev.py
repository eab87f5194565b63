"""Consoles: QEMU character devices on unix sockets, drained continuously.

A socket nobody reads stalls the guest's output once a few hundred bytes are
queued, so every console is read on vmanager's I/O loop from the moment it is
connected, whether or not the user ever looks at it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import itertools
import logging
import math
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vmanager import _aio
from vmanager.errors import ConsoleTimeout, GuestCommandError, GuestError
from vmanager.qemu.history import DEFAULT_LIMIT, ERROR_TAIL, History
from vmanager.qemu.logrotate import RotatingLog

if TYPE_CHECKING:
    from vmanager.qemu.login import SerialSession

_TAIL_LINES: Final = 30
#: How often a waiting expect searches a console that keeps growing.
_RESCAN: Final = 0.05


class Console:
    """A guest console, drained continuously, with a bounded history.

    ``read()`` returns the output kept so far (the last ``history_limit``
    bytes, 4 MiB by default: a guest decides how much it prints);
    ``wait_for()`` searches output that came after the previous match (like
    *expect*), so successive calls find successive occurrences; ``write()``
    types into the console. QEMU also logs the serial console to a file
    (kept bounded by :mod:`vmanager.logkeeper`), read back on :meth:`attach`.
    """

    def __init__(self, name: str, *, logger: logging.Logger | None = None,
                 history_limit: int = DEFAULT_LIMIT) -> None:
        self.name = name
        self._log = logger or logging.getLogger(__name__)
        self._hist = History(history_limit)
        self._cond = threading.Condition()
        self._pos = 0                 # absolute text offset of the expect mark
        self._writer: asyncio.StreamWriter | None = None
        self._task: concurrent.futures.Future[None] | None = None
        self._eof = False
        self._overrun = False         # unread output was forgotten since the mark
        self.log_file: RotatingLog | None = None

    @property
    def history_limit(self) -> int:
        """How many bytes (and characters) of output are kept in memory."""
        return self._hist.limit

    def attach(self, sock: socket.socket, *, history: bytes = b"", log: Path | None = None,
               resume: bool = False) -> None:
        """Start draining a connected socket (vmanager takes it over).

        ``history`` is older output to put in front of what was kept. ``log`` is
        the file QEMU logs this console to (rotated with one previous file, see
        :class:`RotatingLog`): with ``resume`` its end becomes the history.
        """
        if log is not None:
            self.log_file = RotatingLog(log)
            if resume:
                history = self.log_file.history(self._hist.limit)
        if history:
            with self._cond:
                kept = self._hist.bytes_since(0)
                self._hist = History(self._hist.limit)
                self._hist.append(history[-self._hist.limit:])
                self._hist.end_of_input()
                self._hist.append(kept)
                self._pos = self._hist.text_start
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
                    self._received(data)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with self._cond:
                    self._hist.end_of_input()
                    self._eof = True
                    self._cond.notify_all()
                writer.close()

        self._task = _aio.submit(pump())
        ready.wait(10)

    def _received(self, data: bytes) -> None:
        with self._cond:
            self._hist.append(data)
            if self._hist.text_start > self._pos:
                self._overrun = True
                self._pos = self._hist.text_start
            self._cond.notify_all()

    def close(self) -> None:
        """Stop reading; idempotent. What was read stays readable."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._writer = None

    # -- reading ------------------------------------------------------------------
    def read(self) -> str:
        """The output kept so far (at most :attr:`history_limit` characters)."""
        with self._cond:
            return self._hist.text_since(0)

    def read_bytes(self, since: int = 0) -> bytes:
        """Like :meth:`read`, undecoded; ``since`` is an :attr:`offset` taken earlier."""
        with self._cond:
            return self._hist.bytes_since(since)

    def read_since(self, offset: int) -> tuple[bytes, int]:
        """The bytes after :attr:`offset` ``offset`` (what is kept of them) and the new offset."""
        with self._cond:
            return self._hist.bytes_since(offset), self._hist.received

    @property
    def offset(self) -> int:
        """Bytes received so far: pass it to :meth:`read_bytes` later to get what came since."""
        with self._cond:
            return self._hist.received

    def tail(self, lines: int = _TAIL_LINES, *, chars: int = ERROR_TAIL) -> str:
        """The last ``lines`` lines of output, at most ``chars`` characters."""
        with self._cond:
            text = self._hist.tail(chars)
        return "\n".join(text.splitlines()[-lines:])

    def mark(self) -> int:
        """Make later :meth:`wait_for` calls look only at output from now on."""
        with self._cond:
            self._pos = self._hist.text_end
            self._overrun = False
            return self._pos

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 60.0, *,
                 overrun_fails: bool = False) -> re.Match[str]:
        """Wait until ``pattern`` (a plain string or compiled regex) appears; return the match.

        Raises :class:`ConsoleTimeout` (with the console's tail) after ``timeout`` s,
        or at once with ``overrun_fails`` when more than the history limit arrived
        without a match (a match could not be whole any more). The unread output
        is searched again as it grows by a quarter or after 50 ms, so a flood
        costs linear time, not a search per chunk.

        >>> m.console.wait_for("login:", timeout=30)  # doctest: +SKIP
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        scanned_end, scanned_at = -1, 0.0
        with self._cond:
            while True:
                end = self._hist.text_end
                now = time.monotonic()
                unread = end - self._pos
                if end != scanned_end and (
                        scanned_end < 0 or 4 * (end - scanned_end) >= unread
                        or now - scanned_at >= _RESCAN or self._eof or now >= deadline):
                    text = self._hist.text_since(self._pos)
                    scanned_end, scanned_at = end, now
                    found = regex.search(text)
                    if found is not None:
                        self._pos += found.end()
                        return found
                left = deadline - now
                if overrun_fails and self._overrun:
                    raise ConsoleTimeout(f"{self.name}: more than {self._hist.limit} bytes "
                                         f"came without {regex.pattern[:200]!r}",
                                         tail=self.tail())
                if left <= 0 or self._eof:
                    why = "the console closed" if self._eof else f"{timeout} s passed"
                    raise ConsoleTimeout(
                        f"{self.name}: {regex.pattern[:200]!r} did not appear ({why})",
                        tail=self.tail())
                self._cond.wait(min(left, _RESCAN))

    def overran(self) -> bool:
        """Whether unread output was forgotten (more than the history limit came) since the mark."""
        with self._cond:
            return self._overrun

    def discard_consumed(self) -> None:
        """Forget output before the last match (for protocol consoles, not the serial log)."""
        with self._cond:
            self._hist.forget_before(self._pos)
            self._overrun = False

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
    """The guest's machine-readable root shell on the virtio serial port ``vmanager.shell``.

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
        that was up before this process connected, one command proves it, its
        answer waited for ``timeout`` s at most.
        """
        if self._expect_hello:
            with self._lock:
                self._await_hello(timeout, "(waiting for the shell)")
        else:
            self.execute("true", timeout=timeout, wait=timeout)

    @property
    def expects_hello(self) -> bool:
        """Whether the shell is to greet (a fresh boot), not proven by a command."""
        return self._expect_hello

    def _await_hello(self, timeout: float, command: str) -> None:
        if self._ready:
            return
        try:
            self.console.wait_for(self.HELLO, timeout=timeout)
        except ConsoleTimeout as exc:
            raise GuestCommandError(
                "the guest's backdoor shell (virtio port vmanager.shell) never came up "
                "(does the guest run one?)",
                command=command, status=None, output=exc.tail) from exc
        self._ready = True

    def execute(self, command: str, *, timeout: float = 60.0,
                wait: float | None = None) -> ExecResult:
        """Run ``command`` with ``sh`` in the guest; return status, stdout and stderr.

        The guest kills the command after ``timeout`` seconds (status 137).
        Raises :class:`GuestCommandError` if no answer comes at all (within
        ``wait`` s when given, else a few seconds after the guest's limit).
        """
        with self._lock:
            deadline = time.monotonic() + timeout
            self._await_hello(timeout, command)
            ident = f"{next(self._ids)}x{int(time.time() * 1000) % 100000}"
            limit = max(1, math.ceil(deadline - time.monotonic()))
            encoded = base64.b64encode(command.encode()).decode()
            self.console.mark()  # the answer comes after this; older output is not read
            # the leading newline ends any line a vanished client left half-written
            self.console.write(f"\n{ident} {limit} {encoded}\n")
            regex = re.compile(rf"@@vmresp {re.escape(ident)} (\S*) O(\S*) E(\S*)\r?\n")
            try:
                found = self.console.wait_for(regex, timeout=limit + 5 if wait is None else wait,
                                              overrun_fails=True)
            except ConsoleTimeout as exc:
                why = ("the guest's reply is larger than the console keeps "
                       f"({self.console.history_limit} bytes)" if self.console.overran()
                       else "no answer from the guest's shell")
                self.console.discard_consumed()
                raise GuestCommandError(why, command=command, status=None,
                                        output="") from exc
            self.console.discard_consumed()
            status = _reply_status(found.group(1), command)
            out = _reply_text(found.group(2), "stdout", command)
            err = _reply_text(found.group(3), "stderr", command)
            return ExecResult(status, out, err)


def _reply_status(field: str, command: str) -> int:
    """A reply's exit status: 0..255 in decimal, or GuestCommandError (guest data is untrusted)."""
    if not re.fullmatch(r"[0-9]{1,3}", field) or int(field) > 255:
        raise GuestCommandError(f"malformed reply from the guest's shell: status {field[:40]!r}",
                                command=command, status=None, output="")
    return int(field)


def _reply_text(field: str, what: str, command: str) -> str:
    """A reply's base64 output field, decoded strictly."""
    try:
        return base64.b64decode(field, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError) as exc:
        raise GuestCommandError(f"malformed reply from the guest's shell: {what} is not "
                                f"base64 ({exc})", command=command, status=None,
                                output="") from exc
