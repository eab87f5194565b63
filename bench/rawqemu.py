"""The baseline: the argv vmanager ran, executed directly, driven the plain way.

vmanager passes QEMU listening sockets as ``fd=N``. Here those chardevs become
``path=`` unix sockets, and QMP is accepted the way QEMU's own
``qemu.machine.QEMUMachine`` (QEMU 7.2) does it: the script listens, QEMU
connects to it as a client (no polling for a socket file), then a blocking
``qmp_capabilities`` handshake. Guest devices are untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


def _opts(spec: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        out.append((key, value if sep else None))
    return out


def _join(opts: Sequence[tuple[str, str | None]]) -> str:
    return ",".join(k if v is None else f"{k}={v}" for k, v in opts)


def rewrite_argv(argv: Sequence[str], run_dir: Path) -> list[str]:
    """vmanager's argv with ``fd=`` chardevs turned into sockets under ``run_dir``.

    ``qmp`` connects out to ``run_dir/qmp.sock`` (QEMUMachine style); every other
    socket chardev listens at ``run_dir/<id>.sock`` with ``server=on,wait=off``.
    ``-pidfile`` and chardev log files move to ``run_dir``; the ``-add-fd`` of
    vmanager's serial log pipe is left out (the log is a file). Raises ``ValueError``
    for an ``fd=`` it does not know how to replace (e.g. a NIC's tap fd).
    """
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-add-fd":  # vmanager's serial log pipe: the raw run logs to a file
            next(it)
            continue
        out.append(arg)
        if arg == "-pidfile":
            next(it)
            out.append(str(run_dir / "qemu.pid"))
        elif arg == "-chardev":
            opts = _opts(next(it))
            ident = dict(opts).get("id") or "chardev"
            if any(k == "fd" for k, _ in opts):
                kept = [(k, v) for k, v in opts
                        if k not in ("fd", "server", "wait", "path")]
                if ident == "qmp":
                    kept.append(("path", str(run_dir / "qmp.sock")))
                else:
                    kept += [("path", str(run_dir / f"{ident}.sock")), ("server", "on"),
                             ("wait", "off")]
                opts = kept
            opts = [(k, _logfile(run_dir, ident, v) if k == "logfile" and v else v)
                    for k, v in opts]
            out.append(_join(opts))
        elif "fd=" in arg:
            raise ValueError(f"cannot rewrite a passed descriptor in {arg!r}")
    return out


def _logfile(run_dir: Path, ident: str, value: str) -> str:
    """A chardev's log file in ``run_dir`` (an ``/dev/fdset/N`` becomes ``<id>.log``)."""
    name = f"{ident}.log" if value.startswith("/dev/fdset/") else Path(value).name
    return str(run_dir / name)


class RawQemu:
    """One QEMU process started from an argv list, with a minimal blocking QMP."""

    def __init__(self, argv: Sequence[str], run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.argv = rewrite_argv(argv, run_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp_sock: socket.socket | None = None
        self._qmp_file: Any = None
        self.serial: socket.socket | None = None

    def __enter__(self) -> RawQemu:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self, *, timeout: float = 30.0) -> None:
        """Start QEMU; return once ``qmp_capabilities`` has been answered."""
        path = self.run_dir / "qmp.sock"
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            listener.listen(1)
            listener.settimeout(timeout)
            with (self.run_dir / "qemu.log").open("wb") as log:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            sock, _ = listener.accept()
        finally:
            listener.close()
        sock.settimeout(timeout)
        self.qmp_sock = sock
        self._qmp_file = sock.makefile("rwb", buffering=0)
        greeting = json.loads(self._qmp_file.readline())
        if "QMP" not in greeting:
            raise RuntimeError(f"no QMP greeting: {greeting!r}")
        self.qmp("qmp_capabilities")

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a QMP command; skip events; raise on an error answer."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qmp_file.write(json.dumps(msg).encode() + b"\n")
        while True:
            line = self._qmp_file.readline()
            if not line:
                raise RuntimeError(f"QMP closed during {command}")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")

    def connect_serial(self, *, timeout: float = 10.0) -> None:
        """Connect to the first serial port's socket (QEMU already listens)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self.run_dir / "serial0.sock"))
        self.serial = s

    def wait_serial(self, text: str, *, timeout: float = 60.0) -> None:
        """Read the serial port until ``text`` appears."""
        assert self.serial is not None
        needle = text.encode()
        buf = b""
        deadline = time.monotonic() + timeout
        while needle not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{text!r} not seen on the serial port in {timeout} s")
            self.serial.settimeout(left)
            chunk = self.serial.recv(65536)
            if not chunk:
                raise RuntimeError("serial port closed")
            buf = buf[-len(needle):] + chunk

    def kill(self) -> None:
        """SIGKILL and reap; close sockets; idempotent."""
        for s in (self._qmp_file, self.qmp_sock, self.serial):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._qmp_file = self.qmp_sock = self.serial = None
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
