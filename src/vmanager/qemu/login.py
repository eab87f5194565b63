"""Logging in on a guest's serial console, then running commands there.

A real system offers a ``login:`` prompt on its serial console (systemd starts
``serial-getty@ttyS0`` for the kernel's ``console=ttyS0``). :func:`login` types
the user name and password, recognises ``Login incorrect``, and then drives
the login shell with a marker protocol: echo is turned off, each command is
sent base64-encoded (so quotes, newlines and ``$`` survive the tty) and run with
``eval``, so ``cd`` and variables persist between commands; its output is cut
between two markers that only the command's completion prints, together with
its exit status. A tty merges stderr into stdout, so ``ExecResult.stderr`` is
always empty here.

Example::

    session = m.console.login("alice", "secret")
    status, out = session.execute("id -un")
    session.logout()
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import time
from typing import TYPE_CHECKING, Final

from vmanager.errors import ConsoleTimeout, GuestCommandError, GuestError

if TYPE_CHECKING:
    from vmanager.qemu.chardev import Console, ExecResult

#: The most output one command may print before it is cut off (bytes of text).
MAX_OUTPUT: Final = 4 << 20
_LOGIN: Final = re.compile(r"login: *$", re.M)
_PASSWORD: Final = re.compile(r"[Pp]assword: *$", re.M)
#: A refusal, or a shell prompt ending the output so far.
_AFTER_PASSWORD: Final = re.compile(r"Login incorrect|[$#%] ?$")
_PROMPT_WAIT: Final = 15.0
#: Seconds a prompt may take to come by itself (login waits ~3 s after a failure).
_SETTLE: Final = 5.0


class LoginError(GuestError):
    """The console refused the user name or password (``Login incorrect``)."""


class SerialSession:
    """A logged-in shell on a serial console (from :func:`login`)."""

    def __init__(self, console: Console, user: str) -> None:
        self.console = console
        self.user = user
        self._open = True

    def execute(self, command: str, timeout: float = 60.0) -> ExecResult:
        """Run ``command`` in the login shell; return status and output.

        Raises :class:`GuestCommandError` when no answer comes in ``timeout`` s
        (the command may still run: press ``ctrl-c`` with ``m.send_key``).
        """
        from vmanager.qemu.chardev import ExecResult
        if not self._open:
            raise GuestError(f"{self.console.name}: the session of {self.user} was logged out")
        tag = secrets.token_hex(6)
        encoded = base64.b64encode(command.encode()).decode()
        # The markers are printed with %s so the typed line (were it echoed) never
        # contains them verbatim.
        self.console.mark()
        self.console.write(
            f"printf '\\n@@%s-b\\n' {tag}; eval \"$(printf %s {encoded} | base64 -d)\"; "
            f"printf '\\n@@%s-e %d\\n' {tag} $?\n")
        try:
            self.console.wait_for(f"@@{tag}-b", timeout=timeout)
            end = self.console.wait_for(re.compile(rf"(?s)(.*?)\r?\n@@{tag}-e (\d+)\r?\n"),
                                        timeout=timeout)
        except ConsoleTimeout as exc:
            raise GuestCommandError(f"{self.console.name}: no answer on the console within "
                                    f"{timeout} s", command=command, status=None,
                                    output=exc.tail) from exc
        out = end.group(1)
        out = out[1:] if out.startswith("\n") else out.removeprefix("\r\n")
        if len(out) > MAX_OUTPUT:
            out = out[-MAX_OUTPUT:]
        return ExecResult(int(end.group(2)), re.sub(r"\r+\n", "\n", out), "")

    def succeed(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command``; return its output, raise :class:`GuestCommandError` unless 0."""
        result = self.execute(command, timeout=timeout)
        if result.status != 0:
            raise GuestCommandError(f"{self.console.name}: command failed", command=command,
                                    status=result.status, output=result.stdout)
        return result.stdout

    def logout(self) -> None:
        """End the session (``exit``); the console shows a new login prompt."""
        if self._open:
            self._open = False
            self.console.write("exit\n")


def login(console: Console, user: str, password: str | None, *,
          timeout: float = 120.0) -> SerialSession:
    """Log in as ``user`` on ``console`` and return the shell session.

    Waits up to ``timeout`` s for the ``login:`` prompt (nudging the console
    with Enter). Raises :class:`LoginError` for a wrong user or password and
    :class:`ConsoleTimeout` when no prompt or shell appears.
    """
    if not user or any(c in user for c in "\r\n\0") or (
            password is not None and any(c in password for c in "\r\n\0")):
        raise GuestError("user and password must be single lines")
    deadline = time.monotonic() + timeout
    # An Enter typed while login still waits out a failed attempt would be read as an
    # empty user name: use a prompt that is there (or comes by itself) first.
    at_prompt = _LOGIN.search(console.read()[-200:]) is not None
    if not at_prompt:
        console.mark()
        try:
            console.wait_for(_LOGIN, timeout=min(_SETTLE, max(0.1, deadline - time.monotonic())))
            at_prompt = True
        except ConsoleTimeout:
            pass
    while not at_prompt:
        console.mark()
        console.write("\n")
        try:
            console.wait_for(_LOGIN, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            at_prompt = True
        except ConsoleTimeout:
            if time.monotonic() >= deadline:
                raise
    console.mark()
    console.write(user + "\n")
    if password is not None:
        console.wait_for(_PASSWORD, timeout=max(1.0, deadline - time.monotonic()))
        console.write(password + "\n")
    # Whatever is typed before the shell reads its first line may be flushed
    # (login does): wait for a prompt, or a refusal, before typing more.
    try:
        found = console.wait_for(_AFTER_PASSWORD, timeout=min(
            _PROMPT_WAIT, max(1.0, deadline - time.monotonic())))
        if found.group(0) == "Login incorrect":
            _refused(console, user)
    except ConsoleTimeout:
        pass  # an unusual prompt: the marker below tells whether a shell reads
    while True:
        tag = secrets.token_hex(6)
        console.mark()
        # Echo off, no prompts: the rest of the session is only what commands print.
        # Ctrl-U drops anything half-typed on the line first.
        console.write(f"\x15stty -echo; PS1=''; PS2=''; export PAGER=cat SYSTEMD_PAGER=cat "
                      f"TERM=dumb; bind 'set enable-bracketed-paste off' 2>/dev/null; "
                      f"printf '@@%s-in\\n' {tag}\n")
        try:
            found = console.wait_for(re.compile(rf"Login incorrect|@@{tag}-in"), timeout=min(
                _PROMPT_WAIT, max(1.0, deadline - time.monotonic())))
        except ConsoleTimeout:
            if time.monotonic() >= deadline:
                raise
            console.write("\x03")  # a line left open (a quote): cancel it and try again
            continue
        if found.group(0) == "Login incorrect":
            _refused(console, user)
        return SerialSession(console, user)


def _refused(console: Console, user: str) -> None:
    """Leave the console at the next login prompt, then raise :class:`LoginError`."""
    with contextlib.suppress(ConsoleTimeout):
        console.wait_for(_LOGIN, timeout=_SETTLE * 2)
    raise LoginError(f"{console.name}: login as {user!r} failed (Login incorrect)")
