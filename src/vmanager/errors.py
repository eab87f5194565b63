"""The exception tree of vmanager.

Every error a user can see derives from :class:`VmanagerError`; errors from
dependencies (``qemu.qmp``, ``pyroute2``, ``subprocess``) are wrapped and
chained with ``from`` so the cause stays visible::

    VmanagerError
     ├── ConfigError            bad input: a name, size, path or option
     │    └── LabFileError      a lab file that does not validate
     ├── StateError             a call that is not legal in the current state
     │    └── StaleRecordError  a record's QEMU is gone or its pid reused (vmanager.state)
     ├── NotFoundError          a machine, snapshot, file or link that is not there
     ├── HostError              the host lacks something or refused (binary, permission, errno)
     │    └── CommandError      a host command failed (argv, status, output)
     ├── NetworkError           netlink, bridge, namespace or router trouble
     │    └── LinkError         a netlink operation on a link (vmanager.net.errors)
     ├── StorageError           qemu-img, images, snapshots on disk
     │    ├── QemuImgError      qemu-img failed (also a CommandError; vmanager.storage)
     │    └── BackingEscapeError  a backing file outside the allowed directories
     ├── RecordError            a machine or lab record that cannot be read (vmanager.state)
     ├── QemuError              the QEMU process
     │    ├── QemuStartError    QEMU died or never answered while starting (log tail)
     │    └── QMPError          a monitor command failed (command, class, description)
     ├── GuestError             the guest did not behave
     │    ├── ConsoleTimeout    a pattern never came on a console (console tail)
     │    ├── GuestCommandError a command in the guest exited non-zero (status, output)
     │    ├── ShutdownTimeout   the guest did not power off in time (machine left running)
     │    ├── AgentError        the QEMU guest agent refused or garbled a command (class, command)
     │    │    └── AgentTimeout the guest agent did not answer in time
     │    └── ScreenTimeout     text or an image never came on screen (last screenshot)
     └── GuestBuildError        the tiny guest or an image could not be built
"""

from __future__ import annotations

from collections.abc import Sequence


class VmanagerError(Exception):
    """Root of every error vmanager raises."""


class ConfigError(VmanagerError, ValueError):
    """Bad input: the message names the offending value."""


class LabFileError(ConfigError):
    """A lab file that does not validate.

    Attributes name the file, the line where the parser knows it, and the field.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = ""
        if path is not None:
            where = path + (f":{line}" if line is not None else "")
        parts = [p for p in (where, field) if p]
        super().__init__(f"{': '.join(parts)}: {message}" if parts else message)
        self.path = path
        self.line = line
        self.field = field


class StateError(VmanagerError):
    """A call made in a state where it is not legal."""

    def __init__(self, message: str, *, state: object = None, required: object = None) -> None:
        super().__init__(message)
        self.state = state
        self.required = required


class NotFoundError(VmanagerError, LookupError):
    """Something named does not exist."""


class HostError(VmanagerError, OSError):
    """The host lacks something vmanager needs, or refused an operation."""


class CommandError(HostError):
    """A host command failed; carries its argv, exit status and output."""

    def __init__(self, message: str, *, argv: Sequence[str], returncode: int | None,
                 stdout: str = "", stderr: str = "") -> None:
        detail = stderr.strip() or stdout.strip()
        if detail:
            message = f"{message}\n{_tail(detail)}"
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class NetworkError(VmanagerError):
    """Building or changing a virtual network failed."""


class StorageError(VmanagerError):
    """Disk image or snapshot trouble."""


class QemuError(VmanagerError):
    """The QEMU process misbehaved."""


class QemuStartError(QemuError):
    """QEMU exited or did not answer while starting; carries argv and the log tail."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), log_tail: str = "",
                 returncode: int | None = None) -> None:
        if log_tail:
            message = f"{message}\nQEMU said:\n{log_tail}"
        super().__init__(message)
        self.argv = list(argv)
        self.log_tail = log_tail
        self.returncode = returncode


class QMPError(QemuError):
    """A QMP command failed."""

    def __init__(self, message: str, *, command: str = "", error_class: str = "",
                 description: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.error_class = error_class
        self.description = description


class GuestError(VmanagerError):
    """The guest did not do what was expected."""


class ConsoleTimeout(GuestError, TimeoutError):
    """A pattern did not appear on a console in time; carries the console tail."""

    def __init__(self, message: str, *, tail: str = "") -> None:
        if tail:
            message = f"{message}\nlast console output:\n{tail}"
        super().__init__(message)
        self.tail = tail


class GuestCommandError(GuestError):
    """A command run in the guest failed (non-zero status or timeout)."""

    def __init__(self, message: str, *, command: str, status: int | None, output: str,
                 stderr: str = "") -> None:
        text = f"{message}\ncommand: {command}\nstatus: {status}"
        if output:
            text += f"\nstdout:\n{_tail(output)}"
        if stderr:
            text += f"\nstderr:\n{_tail(stderr)}"
        super().__init__(text)
        self.command = command
        self.status = status
        self.output = output
        self.stderr = stderr


class ShutdownTimeout(GuestError, TimeoutError):
    """A graceful shutdown did not finish in time; the machine was left running.

    Carries the machine's name and the timeout; ``Machine.stop()`` ends it by force.
    """

    def __init__(self, message: str, *, machine: str, timeout: float) -> None:
        super().__init__(message)
        self.machine = machine
        self.timeout = timeout


class AgentError(GuestError):
    """The QEMU guest agent answered with an error or with something malformed."""

    def __init__(self, message: str, *, command: str = "", error_class: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.error_class = error_class


class AgentTimeout(AgentError, TimeoutError):
    """The guest agent did not answer in time (not running yet, or the guest hangs)."""


class ScreenTimeout(GuestError, TimeoutError):
    """Something expected never came on screen; carries the last screenshot's path."""

    def __init__(self, message: str, *, screenshot: str | None = None) -> None:
        if screenshot:
            message = f"{message} (last screenshot: {screenshot})"
        super().__init__(message)
        self.screenshot = screenshot


class GuestBuildError(VmanagerError):
    """The tiny test guest or a distribution image could not be built."""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])
