"""What the QEMU guest agent answers, as checked values: results and strict parsers.

Everything read from the guest is untrusted: strings are bounded, integers
are integers, base64 is decoded strictly; anything else is an
:class:`~vmanager.errors.AgentError`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from vmanager.errors import AgentError

#: The longest line accepted from the agent (exec output is capped at 16 MiB by
#: qemu-ga; base64 makes that 22 MiB).
MAX_LINE: Final = 24 << 20


@dataclass(frozen=True)
class ExecOutput:
    """What ``guest-exec`` reported for a finished process."""

    status: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.status, self.stdout))


@dataclass(frozen=True)
class IPAddress:
    """One address of a guest interface."""

    family: str  # "ipv4" or "ipv6"
    address: str
    prefix: int


@dataclass(frozen=True)
class GuestInterface:
    """A network interface as the guest sees it."""

    name: str
    mac: str | None
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class OSInfo:
    """``guest-get-osinfo``: os-release fields and uname."""

    id: str
    name: str
    pretty_name: str
    version: str
    version_id: str
    kernel_release: str
    kernel_version: str
    machine: str


def check_str(value: object, what: str, *, limit: int = 4096) -> str:
    """``value`` if it is a string of at most ``limit`` characters, else :class:`AgentError`."""
    if not isinstance(value, str) or len(value) > limit:
        raise AgentError(f"guest agent: {what} is not a string of at most {limit} characters")
    return value


def check_int(value: object, what: str) -> int:
    """``value`` if it is an integer (not a bool), else :class:`AgentError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentError(f"guest agent: {what} is not an integer: {value!r:.80}")
    return value


def check_b64(value: object, what: str) -> bytes:
    """Strictly decoded base64 (``None`` is empty), else :class:`AgentError`."""
    if value is None:
        return b""
    try:
        return base64.b64decode(check_str(value, what, limit=MAX_LINE), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AgentError(f"guest agent: {what} is not valid base64") from exc
