"""How a Machine reports what it ran, so another process can reattach to it.

The machine package owns this small interface; :mod:`vmanager.state`
implements it (records in the state directory, file locks) and registers
that implementation with :func:`set_default`, so ``machine`` never imports
``state``. A Machine calls, in this order:

``claim`` before anything is made (lock; refuse a name that runs elsewhere),
``started`` once QMP answers (what was run, the process, every part's runtime),
``changed`` after a part's runtime changed (a NIC, DIMM or CD was hot-plugged),
``stopped`` after teardown, or ``detached`` when QEMU is left running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RunInfo:
    """What a machine ran: enough to find the process again and rebuild the machine.

    ``definition`` rebuilds the Machine (its constructor's arguments in JSON
    form); ``parts`` holds each part's :meth:`~vmanager.machine.part.Part.runtime`.
    """

    name: str
    pid: int
    argv: tuple[str, ...]
    run_dir: str
    accel: str
    definition: Mapping[str, Any]
    parts: Mapping[str, Any] = field(default_factory=dict)


class Recorder(Protocol):
    """Keeps what :class:`RunInfo` says where other processes find it."""

    def claim(self, name: str) -> None:
        """Before a start: take the machine's name; :class:`StateError` if it runs."""

    def started(self, info: RunInfo) -> None:
        """QEMU answers: record it."""

    def changed(self, info: RunInfo) -> None:
        """A part's runtime changed while QEMU runs."""

    def stopped(self, name: str) -> None:
        """QEMU is gone and everything is torn down (also after a failed start)."""

    def detached(self, name: str) -> None:
        """This process let go; QEMU runs on and its record stays."""


class NullRecorder:
    """Records nothing (no state package loaded, or a test wants none)."""

    def claim(self, name: str) -> None:
        """Nothing to take."""

    def started(self, info: RunInfo) -> None:
        """Nothing recorded."""

    def changed(self, info: RunInfo) -> None:
        """Nothing recorded."""

    def stopped(self, name: str) -> None:
        """Nothing to forget."""

    def detached(self, name: str) -> None:
        """Nothing to release."""


def _no_attach(name: str, timeout: float) -> object:
    from vmanager.errors import StateError
    raise StateError(f"cannot attach to machine {name!r}: no recorder is registered "
                     "(import vmanager.state)", state="no records")


_factory: Callable[[], Recorder] = NullRecorder
_attach: Callable[[str, float], object] = _no_attach


def set_default(factory: Callable[[], Recorder],
                attach: Callable[[str, float], object] | None = None) -> None:
    """Make ``factory()`` the recorder of every Machine built without ``recorder=``.

    ``attach(name, timeout)`` is what :meth:`Machine.attach` calls: it finds the
    record and rebuilds the machine (:meth:`Machine.reconnect`).
    """
    global _factory, _attach
    _factory = factory
    if attach is not None:
        _attach = attach


def default() -> Recorder:
    """A new recorder from the registered factory."""
    return _factory()


def attach(name: str, *, timeout: float) -> object:
    """Rebuild machine ``name`` from what the registered recorder kept."""
    return _attach(name, timeout)
