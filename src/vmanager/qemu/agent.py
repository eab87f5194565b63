"""A client for the QEMU guest agent (``qemu-ga``) on its virtio-serial channel.

The agent speaks QMP's JSON, one object per line, but without a greeting, with
no way to tell an answer from a stale one, and over a channel that keeps what
was written while the agent was not running and delivers it when it starts.
So every session starts with ``guest-sync-delimited``: the client sends a
``0xFF`` byte (which resets the agent's parser) and a random id; the agent
answers ``0xFF`` followed by the id, and everything before that byte is old.
After any timeout or malformed answer the connection is dropped and the next
call synchronises again. (``qemu.qmp`` expects a QMP peer that answers in
order and keeps ids; its framing cannot skip to a delimiter, so this small
client is separate.)

Everything read from the guest is untrusted: lines are bounded
(:data:`MAX_LINE`), types are checked, base64 is decoded strictly, file reads
stop at a caller's limit.

Example::

    agent = GuestAgent(run_dir / "qga.sock", name="web")
    agent.ping(timeout=5)
    status, out = agent.exec(["/bin/sh", "-c", "id -u"])
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from vmanager.errors import AgentError, AgentTimeout
from vmanager.qemu.agent_data import MAX_LINE as MAX_LINE
from vmanager.qemu.agent_data import ExecOutput as ExecOutput
from vmanager.qemu.agent_data import GuestInterface as GuestInterface
from vmanager.qemu.agent_data import IPAddress as IPAddress
from vmanager.qemu.agent_data import OSInfo as OSInfo
from vmanager.qemu.agent_data import check_b64 as _b64
from vmanager.qemu.agent_data import check_int as _int
from vmanager.qemu.agent_data import check_str as _str
from vmanager.qemu.agent_link import AgentLink

#: Bytes asked for per guest-file-read / sent per guest-file-write.
FILE_CHUNK: Final = 1 << 20
#: Default cap on :meth:`GuestAgent.read_file`.
MAX_FILE: Final = 64 << 20
#: Exit status reported when a command is killed after its timeout (like the shell's).
KILLED_STATUS: Final = 137
# Stop a process, kill its descendants (they hold the output pipes qemu-ga waits
# on), then the process itself; /proc/PID/task/*/children lists direct children.
_KILL_TREE: Final = ('t() { kill -STOP "$1" 2>/dev/null; '
                     'for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do t "$c"; done; '
                     'kill -KILL "$1" 2>/dev/null; }; t "$1"')


class GuestAgent(AgentLink):
    """A connection to one machine's guest agent; thread-safe, reconnects on demand.

    ``connect`` is a unix socket path or a callable returning a connected
    socket (tests pass one end of a socketpair). :meth:`call` runs any agent
    command; the methods below are the ones vmanager uses, with checked answers.
    """

    def ping(self, timeout: float = 10.0) -> None:
        """Return once the agent answers (raises :class:`AgentTimeout` otherwise)."""
        self.call("guest-ping", timeout=timeout)

    def wait(self, timeout: float = 120.0) -> float:
        """Wait until the agent answers; return the seconds it took."""
        started = time.monotonic()
        self.ping(timeout=timeout)
        return time.monotonic() - started

    def info(self) -> dict[str, Any]:
        """The agent's version and the names of its enabled commands."""
        ret = self.call("guest-info")
        if not isinstance(ret, dict) or not isinstance(ret.get("supported_commands"), list):
            raise AgentError(f"{self.name}: malformed guest-info", command="guest-info")
        return {"version": _str(ret.get("version"), "version", limit=100),
                "commands": sorted(str(c.get("name"))[:100] for c in ret["supported_commands"]
                                   if isinstance(c, dict) and c.get("enabled"))}

    def exec(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0,
             env: Sequence[str] | None = None) -> ExecOutput:
        """Run ``argv`` in the guest and wait for it; return status, stdout and stderr.

        After ``timeout`` s the process is killed (``kill -KILL`` through the
        agent) and its status is :data:`KILLED_STATUS`, as with the backdoor
        shell. A process killed by signal N reports 128+N.
        """
        if not argv or not all(isinstance(a, str) for a in argv):
            raise AgentError("exec needs a non-empty list of strings", command="guest-exec")
        deadline = time.monotonic() + timeout
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        if env is not None:
            args["env"] = list(env)
        ret = self.call("guest-exec", args, timeout=min(timeout, 30.0) + 5)
        if not isinstance(ret, dict):
            raise AgentError(f"{self.name}: malformed guest-exec answer", command="guest-exec")
        pid = _int(ret.get("pid"), "guest-exec pid")
        delay = 0.01
        killed = False
        while True:
            status = self.call("guest-exec-status", {"pid": pid}, timeout=30.0)
            if not isinstance(status, dict):
                raise AgentError(f"{self.name}: malformed guest-exec-status",
                                 command="guest-exec-status")
            if status.get("exited") is True:
                return self._exec_output(status, killed)
            if time.monotonic() >= deadline and not killed:
                self._log.warning("%s: %s still runs after %.0f s; killing it", self.name,
                                  argv, timeout)
                self.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", _KILL_TREE, "sh",
                                                                     str(pid)]})
                killed = True
                deadline = time.monotonic() + 10
            elif time.monotonic() >= deadline:
                raise AgentTimeout(f"{self.name}: guest process {pid} did not end after "
                                   "it was killed", command="guest-exec-status")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @staticmethod
    def _exec_output(status: dict[str, Any], killed: bool) -> ExecOutput:
        if "exitcode" in status:
            code = _int(status["exitcode"], "exitcode")
        elif "signal" in status:
            code = 128 + _int(status["signal"], "signal")
        else:
            code = -1
        if killed:
            code = KILLED_STATUS
        return ExecOutput(code & 0xFFFF if code >= 0 else code,
                          _b64(status.get("out-data"), "out-data"),
                          _b64(status.get("err-data"), "err-data"),
                          bool(status.get("out-truncated") or status.get("err-truncated")))

    def read_file(self, path: str, *, max_bytes: int = MAX_FILE) -> bytes:
        """The contents of guest file ``path`` (at most ``max_bytes``, else an error)."""
        handle = _int(self.call("guest-file-open", {"path": path, "mode": "r"}), "file handle")
        data = bytearray()
        try:
            while True:
                ret = self.call("guest-file-read", {"handle": handle, "count": FILE_CHUNK})
                if not isinstance(ret, dict):
                    raise AgentError("malformed guest-file-read", command="guest-file-read")
                chunk = _b64(ret.get("buf-b64"), "buf-b64")
                if len(chunk) != _int(ret.get("count"), "count") or len(chunk) > FILE_CHUNK:
                    raise AgentError(f"{self.name}: guest-file-read count does not match "
                                     "its data", command="guest-file-read")
                data += chunk
                if len(data) > max_bytes:
                    raise AgentError(f"{self.name}: {path} is larger than {max_bytes} bytes",
                                     command="guest-file-read")
                if ret.get("eof") is True or not chunk:
                    return bytes(data)
        finally:
            self._close_handle(handle)

    def write_file(self, path: str, data: bytes, *, append: bool = False) -> None:
        """Write ``data`` to guest file ``path`` (created or truncated; or appended)."""
        handle = _int(self.call("guest-file-open", {"path": path,
                                                    "mode": "a" if append else "w"}),
                      "file handle")
        try:
            for pos in range(0, len(data), FILE_CHUNK):
                chunk = data[pos:pos + FILE_CHUNK]
                ret = self.call("guest-file-write", {
                    "handle": handle, "buf-b64": base64.b64encode(chunk).decode()})
                if not isinstance(ret, dict) or _int(ret.get("count"), "count") != len(chunk):
                    raise AgentError(f"{self.name}: short write to {path}",
                                     command="guest-file-write")
            self.call("guest-file-flush", {"handle": handle})
        finally:
            self._close_handle(handle)

    def _close_handle(self, handle: int) -> None:
        try:
            self.call("guest-file-close", {"handle": handle})
        except AgentError as exc:
            self._log.debug("%s: guest-file-close %d: %s", self.name, handle, exc)

    def network_interfaces(self) -> list[GuestInterface]:
        """The guest's interfaces with their MAC and IP addresses."""
        ret = self.call("guest-network-get-interfaces")
        if not isinstance(ret, list):
            raise AgentError("malformed guest-network-get-interfaces answer")
        found = []
        for item in ret[:4096]:
            if not isinstance(item, dict):
                continue
            addrs = []
            for a in item.get("ip-addresses") or []:
                if isinstance(a, dict):
                    addrs.append(IPAddress(_str(a.get("ip-address-type"), "address type", limit=8),
                                           _str(a.get("ip-address"), "address", limit=64),
                                           _int(a.get("prefix"), "prefix")))
            mac = item.get("hardware-address")
            found.append(GuestInterface(_str(item.get("name"), "interface name", limit=64),
                                        _str(mac, "MAC", limit=64) if mac is not None else None,
                                        tuple(addrs)))
        return found

    def os_info(self) -> OSInfo:
        """The guest's OS (``/etc/os-release``) and kernel."""
        ret = self.call("guest-get-osinfo")
        if not isinstance(ret, dict):
            raise AgentError("malformed guest-get-osinfo answer", command="guest-get-osinfo")

        def field(key: str) -> str:
            value = ret.get(key, "")
            return _str(value, key, limit=512) if value is not None else ""
        return OSInfo(field("id"), field("name"), field("pretty-name"), field("version"),
                      field("version-id"), field("kernel-release"), field("kernel-version"),
                      field("machine"))

    def hostname(self) -> str:
        """The guest's host name."""
        ret = self.call("guest-get-host-name")
        return _str(ret.get("host-name") if isinstance(ret, dict) else None, "host-name",
                    limit=255)

    def get_time(self) -> float:
        """The guest's clock, seconds since the epoch."""
        return _int(self.call("guest-get-time"), "time") / 1e9

    def sync_time(self) -> None:
        """Set the guest's clock to the host's (``guest-set-time``)."""
        self.call("guest-set-time", {"time": time.time_ns()})

    def fsfreeze(self, timeout: float = 60.0) -> int:
        """Freeze the guest's file systems; return how many were frozen."""
        return _int(self.call("guest-fsfreeze-freeze", timeout=timeout), "frozen count")

    def fsthaw(self, timeout: float = 60.0) -> int:
        """Thaw the guest's file systems; return how many were thawed."""
        return _int(self.call("guest-fsfreeze-thaw", timeout=timeout), "thawed count")

    def fsfreeze_status(self) -> str:
        """``"frozen"`` or ``"thawed"``."""
        return _str(self.call("guest-fsfreeze-status"), "freeze status", limit=16)

    @contextmanager
    def frozen(self, timeout: float = 60.0) -> Iterator[int]:
        """Freeze the file systems for the ``with`` block; always thaw afterwards."""
        count = self.fsfreeze(timeout)
        try:
            yield count
        finally:
            self.fsthaw(timeout)

    def shutdown(self, mode: str = "powerdown") -> None:
        """Ask the guest to ``powerdown``, ``halt`` or ``reboot`` (no answer comes)."""
        if mode not in ("powerdown", "halt", "reboot"):
            raise AgentError(f"shutdown mode {mode!r} is not powerdown, halt or reboot",
                             command="guest-shutdown")
        self.call("guest-shutdown", {"mode": mode})
        with self._lock:
            self._drop()


__all__ = ["ExecOutput", "GuestAgent", "GuestInterface", "IPAddress", "OSInfo"]
