"""The guest agent's wire: connect, resynchronise, one command and its answer.

The agent speaks QMP's JSON, one object per line, but without a greeting, with
no way to tell an answer from a stale one, and over a channel that keeps what
was written while the agent was not running. So every session starts with
``guest-sync-delimited`` (a ``0xFF`` byte and a random id; everything before the
answer's ``0xFF`` is old), and after any timeout or malformed answer the
connection is dropped and the next call synchronises again. Lines are bounded
(:data:`~vmanager.qemu.agent_data.MAX_LINE`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from vmanager.errors import AgentError, AgentTimeout
from vmanager.qemu.agent_data import MAX_LINE

_SYNC_RESEND: Final = 3.0
_NO_RESPONSE: Final = frozenset({"guest-shutdown", "guest-suspend-disk", "guest-suspend-ram",
                                 "guest-suspend-hybrid"})


class AgentLink:
    """One connection to a guest agent: :meth:`call` sends a command and returns its answer."""

    def __init__(self, connect: Path | str | Callable[[], socket.socket], *, name: str = "",
                 logger: logging.Logger | None = None) -> None:
        self.name = name
        self._connect = connect
        self._log = logger or logging.getLogger(__name__)
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def __repr__(self) -> str:
        return f"<GuestAgent {self.name}>"

    # -- connection ----------------------------------------------------------------
    def close(self) -> None:
        """Drop the connection; idempotent. A later call connects again.

        A call waiting for the guest in another thread is woken (it fails with
        AgentError) rather than holding the close up until its own timeout.
        """
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self._buf.clear()
        if sock is not None:
            sock.close()

    def _open(self, deadline: float) -> socket.socket:
        if self._sock is not None:
            return self._sock
        try:
            if callable(self._connect):
                sock = self._connect()
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    sock.connect(str(self._connect))
                except OSError:
                    sock.close()
                    raise
        except OSError as exc:
            raise AgentError(f"{self.name}: cannot connect to the guest agent's channel: "
                             f"{exc}") from exc
        self._sock = sock
        try:
            self._sync(deadline)
        except BaseException:
            self._drop()
            raise
        return sock

    def _sync(self, deadline: float) -> None:
        """Skip everything stale: send 0xFF + guest-sync-delimited, read up to our id."""
        while True:
            ident = secrets.randbelow(1 << 31)
            self._send(b"\xff" + self._encode("guest-sync-delimited", {"id": ident}))
            resend = min(deadline, time.monotonic() + _SYNC_RESEND)
            while True:
                try:
                    self._skip_to_delimiter(resend)
                    reply = self._read_message(resend, "guest-sync-delimited")
                except AgentTimeout:
                    if time.monotonic() >= deadline:
                        raise
                    break  # the agent may have started since: ask again
                if reply.get("return") == ident:
                    return

    def _skip_to_delimiter(self, deadline: float) -> None:
        while True:
            at = self._buf.find(b"\xff")
            if at >= 0:
                del self._buf[:at + 1]
                return
            self._buf.clear()
            self._fill(deadline, "guest-sync-delimited")

    def _fill(self, deadline: float, command: str) -> None:
        sock = self._sock
        assert sock is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise AgentTimeout(f"{self.name}: the guest agent did not answer {command}",
                               command=command)
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except TimeoutError as exc:
            raise AgentTimeout(f"{self.name}: the guest agent did not answer {command}",
                               command=command) from exc
        except OSError as exc:
            raise AgentError(f"{self.name}: guest agent channel: {exc}", command=command) from exc
        if not data:
            raise AgentError(f"{self.name}: the guest agent's channel closed", command=command)
        self._buf += data

    def _read_message(self, deadline: float, command: str) -> dict[str, Any]:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError as exc:
                    raise AgentError(f"{self.name}: the guest agent sent malformed JSON",
                                     command=command) from exc
                if not isinstance(msg, dict):
                    raise AgentError(f"{self.name}: the guest agent sent a non-object",
                                     command=command)
                return msg
            if len(self._buf) > MAX_LINE:
                raise AgentError(f"{self.name}: the guest agent sent a line longer than "
                                 f"{MAX_LINE} bytes", command=command)
            self._fill(deadline, command)

    @staticmethod
    def _encode(command: str, arguments: dict[str, Any] | None) -> bytes:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        return json.dumps(msg).encode() + b"\n"

    def _send(self, data: bytes) -> None:
        sock = self._sock
        assert sock is not None
        try:
            sock.settimeout(10.0)
            sock.sendall(data)
        except OSError as exc:
            raise AgentError(f"{self.name}: cannot write to the guest agent: {exc}") from exc

    # -- commands ------------------------------------------------------------------
    def call(self, command: str, arguments: dict[str, Any] | None = None, *,
             timeout: float = 30.0) -> Any:
        """Run one agent command and return its ``return`` value.

        Raises :class:`AgentTimeout` when no answer comes within ``timeout`` s
        (the connection is then dropped, so no late answer is mistaken for the
        next one) and :class:`AgentError` for an error answer or a malformed one.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            try:
                self._open(deadline)
                self._send(self._encode(command, arguments))
                if command in _NO_RESPONSE:
                    return None
                reply = self._read_message(deadline, command)
            except AgentError as exc:
                self._drop()
                if not exc.command:
                    exc.command = command
                raise
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            cls = str(err.get("class", ""))[:100]
            desc = str(err.get("desc", ""))[:2000]
            raise AgentError(f"{self.name}: guest agent: {command}: {desc or cls}",
                             command=command, error_class=cls)
        if "return" not in reply:
            with self._lock:
                self._drop()
            raise AgentError(f"{self.name}: the guest agent's answer to {command} has no "
                             "'return'", command=command)
        return reply["return"]
