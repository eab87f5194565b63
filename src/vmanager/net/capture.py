"""Packet capture on an interface in any namespace, with tcpdump, into a pcap file.

:class:`Capture` runs ``tcpdump`` inside the interface's namespace and has it
write classic pcap to a descriptor this process opened: the file is made
owner-only (0600) before any frame is written, and ``-`` streams to standard
output (``vmanager capture ... -w - | wireshark -k -i -``). tcpdump is told to
flush every frame (``-U``), so a capture read while it runs is complete up to
the last frame.

A capture stops when ``count`` frames are in, ``duration`` seconds have
passed, or :meth:`Capture.stop` is called (leaving the ``with`` block does):
tcpdump gets SIGINT, which makes it finish the file, and SIGKILL if it does not
exit within a few seconds. It is always waited for, so no process is left.

>>> with nic.capture("a.pcap", count=100) as cap:    # doctest: +SKIP
...     machine.succeed("ping -c 3 10.0.0.1")
>>> cap.frames                                      # doctest: +SKIP
6
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from vmanager import validate
from vmanager.errors import ConfigError, HostError, StateError
from vmanager.net._nsexec import popen

log = logging.getLogger(__name__)

#: Seconds tcpdump may take to open the interface and say "listening on".
START_TIMEOUT = 15.0
#: Seconds between SIGINT and SIGKILL when stopping.
STOP_GRACE = 5.0
_STDERR_MAX = 64 * 1024
_CAPTURED = re.compile(rb"(\d+) packets? captured")


def tcpdump_path() -> str:
    """The tcpdump binary; :class:`HostError` naming the package when missing."""
    found = shutil.which("tcpdump") or next(
        (p for p in ("/usr/bin/tcpdump", "/usr/sbin/tcpdump") if os.access(p, os.X_OK)), None)
    if found is None:
        raise HostError("packet capture needs tcpdump (Debian/Ubuntu: apt-get install tcpdump)")
    return found


def open_output(path: str | os.PathLike[str]) -> int:
    """Open ``path`` for a capture: created 0600, or an existing file of ours truncated.

    Refuses (``ConfigError``) a path that is a symlink, not a regular file, or
    belongs to another user: a capture holds traffic and must stay private.
    """
    target = Path(path)
    try:
        info = target.lstat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"capture file {target} exists and is not a regular file")
        if info.st_uid != os.geteuid():
            raise ConfigError(f"capture file {target} belongs to another user; not "
                              "overwriting it")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise HostError(f"cannot write capture file {target}: {exc.strerror}") from exc
    return fd


class Capture:
    """tcpdump on ``ifname`` (in ``netns``) writing pcap to ``path`` (``"-"``: stdout).

    Use as a context manager, or :meth:`start` then :meth:`stop`/:meth:`wait`.
    ``filter`` is a tcpdump expression (``"icmp"``, ``"port 53"``); ``count``
    counts the frames that match it.
    ``frames`` is what tcpdump counted once it stopped.

    Raises:
        ConfigError: bad count/duration/interface name, or an unsafe output path.
        HostError: tcpdump is missing or could not open the interface.
    """

    def __init__(self, ifname: str, *, netns: str | None = None,
                 path: str | os.PathLike[str] | IO[bytes], count: int | None = None,
                 duration: float | None = None, snaplen: int = 262144,
                 filter: str | None = None) -> None:
        self.ifname = validate.ifname(ifname, what="capture interface")
        self.netns = netns
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ConfigError(f"count: must be a positive number of frames, not {count!r}")
        if duration is not None and (isinstance(duration, bool) or not duration > 0):
            raise ConfigError(f"duration: must be a positive number of seconds, not "
                              f"{duration!r}")
        if filter is not None and (not isinstance(filter, str) or "\0" in filter
                                   or len(filter) > 4096):
            raise ConfigError(f"filter: must be a tcpdump filter expression, not {filter!r}")
        #: a tcpdump (pcap-filter) expression such as ``"icmp or arp"``; ``None``: all
        self.filter = filter
        self.count = count
        self.duration = float(duration) if duration is not None else None
        self.snaplen = snaplen
        self.path = path
        self.frames: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = bytearray()
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None
        self._deadline: float | None = None

    def __repr__(self) -> str:
        return f"Capture({self.ifname!r}, netns={self.netns!r}, path={self.path!r})"

    @property
    def pid(self) -> int | None:
        """tcpdump's process id once started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether tcpdump is still capturing."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start tcpdump; returns once it listens, so later frames are in the file."""
        if self._proc is not None:
            raise StateError(f"{self!r} was started already")
        argv = [tcpdump_path(), "-i", self.ifname, "-w", "-", "-U", "-n", "--immediate-mode",
                "-s", str(self.snaplen)]
        if self.count is not None:
            argv += ["-c", str(self.count)]
        if self.filter:
            argv += ["--", self.filter]  # one argument: tcpdump joins and parses it
        if isinstance(self.path, (str, os.PathLike)) and os.fspath(self.path) != "-":
            out_fd = open_output(self.path)
            close_out = True
        else:
            out_fd = (self.path.fileno() if not isinstance(self.path, (str, os.PathLike))
                      else 1)
            close_out = False
        try:
            self._proc = popen(argv, netns=self.netns, stdin=subprocess.DEVNULL,
                               stdout=out_fd, stderr=subprocess.PIPE,
                               start_new_session=True)  # Ctrl-C goes to us; we stop it
        finally:
            if close_out:
                os.close(out_fd)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True,
                                        name=f"capture-{self.ifname}")
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._finish()
                raise HostError(f"tcpdump could not capture on {self.ifname!r}"
                                + (f" in namespace {self.netns!r}" if self.netns else "")
                                + f": {self.stderr.strip() or 'no output'}")
        if self.duration is not None:
            self._deadline = time.monotonic() + self.duration
        log.info("capturing on %s (netns %s) to %s", self.ifname, self.netns, self.path)
        return self

    @property
    def stderr(self) -> str:
        """What tcpdump said (bounded)."""
        return self._stderr.decode(errors="replace")

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            if len(self._stderr) < _STDERR_MAX:
                self._stderr += line[:_STDERR_MAX - len(self._stderr)]
            if b"listening on" in line:
                self._listening.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the capture ends by itself (count or duration); ``True`` if it did.

        Without ``count`` or ``duration`` it only ends by :meth:`stop`; with
        ``duration`` this stops it when the time is up.
        """
        if self._proc is None:
            raise StateError(f"{self!r} is not started")
        end = None if timeout is None else time.monotonic() + timeout
        while self._proc.poll() is None:
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                self.stop()
                return True
            if end is not None and now >= end:
                return False
            limits = [x for x in (self._deadline, end) if x is not None]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(min([0.5] + [max(0.0, x - now) for x in limits]))
        self._finish()
        return True

    def stop(self) -> None:
        """End the capture (SIGINT, then SIGKILL after a grace time) and reap tcpdump."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("tcpdump on %s ignored SIGINT; killing it", self.ifname)
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        self._finish()

    def _finish(self) -> None:
        proc = self._proc
        assert proc is not None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if self._reader is not None:
            self._reader.join(2.0)
        if proc.stderr is not None:
            proc.stderr.close()
        found = _CAPTURED.search(bytes(self._stderr))
        if found:
            self.frames = int(found.group(1))

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
