"""Running vmanager on a lab's servers: OpenSSH's client, an argv list, JSON back.

Each call is ``ssh [options] [user@]host -- vmanager --json ...``; the remote
side prints JSON on stdout, or an error object (message, type, exit code) on
stderr. Host keys are checked strictly: a server whose key is not in
``known_hosts`` (the lab's file, else the user's) is refused, never added
(``StrictHostKeyChecking=yes``, ``BatchMode=yes``: no prompts, no passwords).

Errors map onto the local tree, keeping the remote's exit code::

    HostError
     ├── ServerUnreachable   ssh itself failed (exit 255): no route, refused, bad host key
     └── RemoteError         the remote vmanager failed; .server, .exit_code, .remote_type
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

from vmanager import __version__
from vmanager.errors import (
    ConfigError,
    GuestError,
    HostError,
    NotFoundError,
    StateError,
    VmanagerError,
)
from vmanager.lab.servers import ServerSpec

log = logging.getLogger(__name__)

SSH = "ssh"
CONNECT_TIMEOUT = 10
SSH_EXIT = 255
_TAIL = 2000


class ServerUnreachable(HostError):
    """ssh could not reach or log in to a server."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message)
        self.server = server


class RemoteError(HostError):
    """The remote vmanager failed; the message is its own, prefixed with the server."""

    def __init__(self, message: str, *, server: str, exit_code: int,
                 remote_type: str = "") -> None:
        super().__init__(message)
        self.server = server
        self.exit_code = exit_code
        self.remote_type = remote_type


class RemoteNotFound(RemoteError, NotFoundError):
    """The remote said: not found."""


class RemoteStateError(RemoteError, StateError):
    """The remote said: wrong state."""


class RemoteConfigError(RemoteError, ConfigError):
    """The remote said: invalid configuration."""


class RemoteGuestError(RemoteError, GuestError):
    """The remote said: the guest misbehaved."""


_BY_CODE: dict[int, type[RemoteError]] = {3: RemoteNotFound, 4: RemoteStateError,
                                          6: RemoteConfigError, 8: RemoteGuestError}


def ssh_options(server: ServerSpec) -> list[str]:
    """The ssh options for ``server`` (without the destination)."""
    opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    if server.known_hosts:
        opts += ["-o", f"UserKnownHostsFile={server.known_hosts}",
                 "-o", "GlobalKnownHostsFile=/dev/null"]
    if server.identity:
        opts += ["-i", server.identity, "-o", "IdentitiesOnly=yes"]
    if server.port:
        opts += ["-p", str(server.port)]
    return opts


def ssh_argv(server: ServerSpec, args: Sequence[str], *, tty: bool = False,
             extra: Sequence[str] = ()) -> list[str]:
    """``ssh ... -- 'vmanager' ARGS...``: each argument quoted for the remote shell."""
    remote = shlex.join([*server.vmanager, *args])
    return [SSH, *ssh_options(server), *(["-t"] if tty else ["-T"]), *extra,
            server.destination, "--", remote]


class Remote:
    """vmanager on one server, reached over SSH."""

    def __init__(self, server: ServerSpec) -> None:
        self.server = server
        self._version_checked = False

    def __repr__(self) -> str:
        return f"Remote({self.server.name!r}, {self.server.destination!r})"

    def _where(self) -> str:
        return f"server {self.server.name!r} ({self.server.destination})"

    def run(self, args: Sequence[str], *, input: str | None = None,
            timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run ``vmanager ARGS`` there; raise :class:`ServerUnreachable` when ssh fails."""
        argv = ssh_argv(self.server, args)
        log.debug("%s: %s", self.server.name, argv)
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                                  timeout=timeout, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise HostError("cannot reach servers: OpenSSH's client (ssh) is not installed"
                            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ServerUnreachable(f"{self._where()}: 'vmanager {' '.join(args[:3])}' did "
                                    f"not finish within {timeout} s", server=self.server.name
                                    ) from exc
        if proc.returncode == SSH_EXIT:
            raise ServerUnreachable(f"{self._where()} cannot be reached: "
                                    f"{proc.stderr.strip()[-_TAIL:] or 'ssh failed'}",
                                    server=self.server.name)
        return proc

    def check_version(self) -> str:
        """The remote vmanager's version; :class:`HostError` when it differs from ours."""
        if self._version_checked:
            return __version__
        proc = self.run(["--version"], timeout=60)
        words = proc.stdout.split()
        if proc.returncode != 0 or len(words) != 2 or words[0] != "vmanager":
            raise HostError(f"{self._where()}: {shlex.join(self.server.vmanager)!r} is not "
                            f"vmanager (exit {proc.returncode}: "
                            f"{(proc.stdout + proc.stderr).strip()[-_TAIL:]})")
        if words[1] != __version__:
            raise HostError(f"{self._where()} runs vmanager {words[1]}, this host {__version__}; "
                            "install the same version on every server of a lab")
        self._version_checked = True
        return words[1]

    def call(self, args: Sequence[str], *, input: str | None = None,
             timeout: float = 300.0) -> Any:
        """``vmanager --json ARGS`` there: its JSON output, or its error raised here."""
        self.check_version()
        proc = self.run(["--json", *args], input=input, timeout=timeout)
        if proc.returncode != 0:
            raise self._error(proc)
        try:
            return json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError as exc:
            raise HostError(f"{self._where()}: 'vmanager {' '.join(args[:2])}' printed no "
                            f"JSON: {proc.stdout[:200]!r}") from exc

    def _error(self, proc: subprocess.CompletedProcess[str]) -> VmanagerError:
        message, kind = proc.stderr.strip()[-_TAIL:], ""
        try:
            data = json.loads(proc.stderr)
            if isinstance(data, dict):
                message = str(data.get("error", message))
                kind = str(data.get("type", ""))
        except ValueError:
            pass
        cls = _BY_CODE.get(proc.returncode, RemoteError)
        return cls(f"server {self.server.name!r}: {message}", server=self.server.name,
                   exit_code=proc.returncode, remote_type=kind)
