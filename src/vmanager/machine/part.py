"""What a part of a Machine sees of it, and the hooks every part implements.

A :class:`~vmanager.Machine` holds its features as parts (``m.disks``,
``m.network``, ``m.screen``, ``m.snapshots``...). A part never sees the whole
Machine: it gets a :class:`MachineView` (name, logger, run directory, state,
QMP) and, when it needs another part, that part explicitly. The Machine walks
its parts in a written order (see ``Machine._parts``):

1. :meth:`Part.prepare` makes host objects (NICs, namespaces, drive locks) and
   pushes an undo step for each on ``launch.undo``;
2. :meth:`Part.contribute` fills in the part's fields of the
   :class:`~vmanager.qemu.cmdline.MachineSpec` (pure; the argv is built from it);
3. :meth:`Part.after_launch` runs once QMP answers;
4. :meth:`Part.teardown` releases what the part made, after QEMU is gone.

:meth:`Part.runtime` says what a reattach needs (device ids, hot-plugged
devices, counters) as JSON-able data; :meth:`Part.restore` takes it back in
another process (``Machine.attach``), so a reattached machine is whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vmanager.undo import UndoStack

if TYPE_CHECKING:
    from vmanager.machine.base import State
    from vmanager.qemu.cmdline import MachineSpec
    from vmanager.qemu.qmp import Monitor


class MachineView(Protocol):
    """The narrow view of its Machine a part gets."""

    @property
    def name(self) -> str:
        """The machine's name."""

    @property
    def log(self) -> logging.Logger:
        """The machine's logger."""

    @property
    def run_dir(self) -> Path:
        """The machine's private run directory (sockets, logs)."""

    @property
    def state(self) -> State:
        """The machine's lifecycle state."""

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        """Run a QMP command; :class:`StateError` unless the machine runs."""

    def monitor(self) -> Monitor:
        """The QMP client (fds, events); :class:`StateError` unless the machine runs."""

    def require(self, *states: State, action: str) -> None:
        """:class:`StateError` naming ``action`` unless the machine is in one of ``states``."""

    def quiet(self, command: str, arguments: dict[str, Any]) -> None:
        """A best-effort clean-up QMP command: failure is logged, not raised."""

    def changed(self) -> None:
        """Tell the machine's recorder that a part's runtime changed (after a hot-plug)."""


@dataclass
class Launch:
    """What parts share while a machine starts: fds QEMU inherits and undo steps.

    ``undo`` runs (last in, first out) if the start fails after a part prepared.
    """

    run_dir: Path
    accel: str
    pass_fds: list[int] = field(default_factory=list)
    #: fds QEMU inherits and this process closes once QEMU has started (or failed).
    owned_fds: list[int] = field(default_factory=list)
    #: the write end of the serial log keeper's pipe (QEMU logs the serial port there)
    serial_log_fd: int | None = None
    undo: UndoStack = field(default_factory=UndoStack)


class Part:
    """A feature of a Machine; every hook does nothing unless overridden."""

    #: Key of this part's runtime in the machine's record.
    key = ""

    def prepare(self, launch: Launch) -> None:
        """Make host objects the machine needs; push an undo step for each."""

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """The spec with this part's fields filled in (no side effects)."""
        return spec

    def after_launch(self) -> None:
        """Runs once QMP answers."""

    def teardown(self) -> None:
        """Release what the part made, after QEMU is gone; idempotent."""

    def runtime(self) -> dict[str, Any]:
        """What a reattach in another process needs, JSON-able."""
        return {}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """Take over a running machine's state from :meth:`runtime` (``Machine.attach``)."""

    def release(self) -> None:
        """Let go without removing anything: the running QEMU keeps it (``detach``)."""


def teardown_all(parts: Iterable[Part], log: logging.Logger) -> list[Exception]:
    """Tear every part down, each in its own try, so one failure does not stop the rest.

    Returns the failures (logged); the caller raises the first.
    """
    failures: list[Exception] = []
    for part in parts:
        try:
            part.teardown()
        except Exception as exc:
            log.warning("tearing down %s: %s", part.key or type(part).__name__, exc)
            failures.append(exc)
    return failures
