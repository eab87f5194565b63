"""A synchronous QMP monitor on top of QEMU's own ``qemu.qmp`` client.

The client lives on vmanager's shared I/O loop; every call here blocks with a
timeout. Errors from ``qemu.qmp`` never escape: they become :class:`QMPError`
(the command failed) or :class:`QemuError` (the connection is gone).
:func:`map_qmp_errors` is the one place a failed command becomes the error of
what the caller was doing (as httpx maps its backend's exceptions).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from qemu.qmp import EventListener, ExecInterruptedError, ExecuteError, QMPClient
from qemu.qmp import QMPError as _LibQMPError

from vmanager import _aio
from vmanager.errors import HostError, NotFoundError, QemuError, QMPError, VmanagerError

Event = Mapping[str, Any]

#: QMP error classes whose meaning does not depend on the call: what they become.
QMP_ERROR_CLASSES: Mapping[str, type[VmanagerError]] = {
    "CommandNotFound": HostError,    # this QEMU lacks the command (too old, or built without)
    "DeviceNotFound": NotFoundError,  # the device or node id is not there (any more)
}


@contextlib.contextmanager
def map_qmp_errors(doing: str, error: type[VmanagerError] = QemuError, *,
                   table: Mapping[str, type[VmanagerError]] = QMP_ERROR_CLASSES
                   ) -> Iterator[None]:
    """Turn a :class:`QMPError` in the block into the error of what the caller was ``doing``.

    The new error says ``"{doing}: {QEMU's description}"`` and chains the
    QMPError (``from``); its class comes from ``table`` for a QMP error class
    listed there, else it is ``error``::

        with map_qmp_errors(f"{name}: resizing {path} failed", StorageError):
            vm.qmp("block_resize", {...})
    """
    try:
        yield
    except QMPError as exc:
        cls = table.get(exc.error_class, error)
        raise cls(f"{doing}: {exc.description or exc}") from exc


#: Events kept per connection (a guest can make QEMU emit events without end).
MAX_EVENTS = 4096


class Monitor:
    """One QMP connection to one QEMU.

    Events are recorded from the moment of connection, so
    :meth:`wait_event` also finds events that arrived before it was called
    (pass ``since=`` a mark from :meth:`event_mark` to skip older ones). The
    last :data:`MAX_EVENTS` are kept; marks stay valid as older ones go.
    """

    def __init__(self, name: str, *, logger: logging.Logger | None = None) -> None:
        self.name = name
        self._log = logger or logging.getLogger(__name__)
        self._client: QMPClient | None = None
        self._events: list[Event] = []
        self._dropped = 0  # events forgotten from the front (marks are absolute)
        self._cond = threading.Condition()
        self._pump: concurrent.futures.Future[None] | None = None
        self._fd_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------
    def connect(self, address: str | socket.socket, *, timeout: float = 30.0) -> None:
        """Connect and negotiate capabilities. Raises :class:`QemuError` on failure."""
        client = QMPClient(self.name)
        listener = EventListener()
        client.register_listener(listener)

        async def go() -> None:
            await client.connect(address)

        try:
            _aio.run(go(), timeout)
        except TimeoutError as exc:
            raise QemuError(f"{self.name}: QMP did not answer within {timeout} s") from exc
        except (_LibQMPError, OSError) as exc:
            raise QemuError(f"{self.name}: cannot connect to QMP: {exc}") from exc
        self._client = client
        self._pump = _aio.submit(self._pump_events(listener))

    async def _pump_events(self, listener: EventListener) -> None:
        async for event in listener:
            with self._cond:
                self._events.append(event)
                if len(self._events) > MAX_EVENTS + MAX_EVENTS // 4:
                    cut = len(self._events) - MAX_EVENTS
                    del self._events[:cut]
                    self._dropped += cut
                self._cond.notify_all()

    def close(self) -> None:
        """Disconnect; idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        try:
            _aio.run(client.disconnect(), 10.0)
        except Exception as exc:  # disconnect re-raises the reader's EOF
            self._log.debug("QMP disconnect: %r", exc)

    # -- commands -----------------------------------------------------------------
    def execute(self, command: str, arguments: Mapping[str, object] | None = None, *,
                timeout: float = 60.0) -> Any:
        """Run a QMP command and return its ``return`` value.

        Raises :class:`QMPError` when QEMU refuses it, :class:`QemuError` when the
        connection is gone or no answer came within ``timeout`` seconds.
        """
        client = self._require()
        self._log.debug("qmp> %s %s", command, arguments or "")
        try:
            result = _aio.run(client.execute(command, dict(arguments) if arguments else None),
                              timeout)
        except ExecuteError as exc:
            raise QMPError(f"{self.name}: QMP {command} failed: {exc.error.error.desc}",
                           command=command, error_class=exc.error_class,
                           description=exc.error.error.desc) from exc
        except ExecInterruptedError as exc:
            raise QemuError(f"{self.name}: QEMU went away during {command}") from exc
        except TimeoutError as exc:
            raise QemuError(f"{self.name}: QMP {command} got no answer in {timeout} s") from exc
        except _LibQMPError as exc:
            raise QemuError(f"{self.name}: QMP {command}: {exc}") from exc
        return result

    def hmp(self, command_line: str, *, timeout: float = 60.0) -> str:
        """Run a human-monitor command (as in ``(qemu)`` prompt) and return its text."""
        out = self.execute("human-monitor-command", {"command-line": command_line},
                           timeout=timeout)
        return str(out)

    def send_fd(self, fd: int, fdname: str) -> None:
        """Pass ``fd`` to QEMU under ``fdname`` (``getfd`` with SCM_RIGHTS)."""
        client = self._require()
        with self._fd_lock:
            async def go() -> object:
                client.send_fd_scm(fd)
                return await client.execute("getfd", {"fdname": fdname})
            try:
                _aio.run(go(), 30.0)
            except ExecuteError as exc:
                raise QMPError(f"{self.name}: getfd {fdname} failed: {exc.error.error.desc}",
                               command="getfd", error_class=exc.error_class,
                               description=exc.error.error.desc) from exc
            except (_LibQMPError, OSError, TimeoutError) as exc:
                raise QemuError(f"{self.name}: passing a file descriptor failed: {exc}") from exc

    # -- events -------------------------------------------------------------------
    def event_mark(self) -> int:
        """A position in the event history; events after it are 'new'."""
        with self._cond:
            return self._dropped + len(self._events)

    def events(self, since: int = 0) -> list[Event]:
        """Events recorded since ``since``."""
        with self._cond:
            return list(self._events[max(0, since - self._dropped):])

    def wait_event(self, name: str | tuple[str, ...], *, timeout: float,
                   since: int = 0, match: Callable[[Event], bool] | None = None) -> Event:
        """Wait for an event named ``name`` (after mark ``since``) and return it.

        Raises :class:`QemuError` after ``timeout`` seconds.
        """
        names = (name,) if isinstance(name, str) else name
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                pos = max(pos, self._dropped)
                while pos < self._dropped + len(self._events):
                    ev = self._events[pos - self._dropped]
                    pos += 1
                    if ev.get("event") in names and (match is None or match(ev)):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QemuError(f"{self.name}: no {'/'.join(names)} event within {timeout} s")
                self._cond.wait(left)

    def _require(self) -> QMPClient:
        if self._client is None:
            raise QemuError(f"{self.name}: QMP is not connected")
        return self._client
