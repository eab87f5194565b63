"""Lifecycle shared by every network object: create once, close idempotently.

Constructing an object makes its kernel objects (the seed's "Creates a virtual
switch"); ``create=False`` describes one without making anything, for
:meth:`Resource.create` (or ``with``) to make later. Each object records an undo
step for everything it makes; ``close()`` and a failed ``create()`` run them in
reverse order, every one of them even if some fail, so that nothing is left
half-built. They run in a removal batch
(:mod:`vmanager.net._batch`): the object's links and namespaces go in one
kernel pass, or in the caller's batch when one is open.
"""

from __future__ import annotations

import enum
import logging
from types import TracebackType
from typing import Self

from vmanager.errors import ConfigError, NetworkError, StateError
from vmanager.net._batch import batch_removal
from vmanager.undo import UndoStack as UndoStack

log = logging.getLogger(__name__)


class Lifecycle(enum.Enum):
    """Where a network object is in its life."""

    NEW = "new"          #: described (``create=False``), nothing made in the kernel yet
    CREATED = "created"  #: every kernel object exists
    CLOSED = "closed"    #: torn down (or creation failed); cannot be created again


class Resource:
    """Base class: ``create()`` builds, ``close()`` removes, both via :class:`UndoStack`.

    Subclasses implement :meth:`_build`, pushing an undo step right after each
    kernel object or process they make, and end their ``__init__`` with
    :meth:`_init_done` so that construction creates unless ``create=False``.
    """

    _kind = "network object"

    def __init__(self) -> None:
        self._state = Lifecycle.NEW
        self._undo = UndoStack()

    def _init_done(self, create: bool) -> None:
        """The end of a subclass's ``__init__``: create now unless told not to."""
        if not isinstance(create, bool):
            raise ConfigError(f"create= takes True or False, got {create!r}")
        if create:
            self.create()

    @property
    def state(self) -> Lifecycle:
        """The lifecycle state."""
        return self._state

    def _label(self) -> str:
        return self._kind

    def _require_created(self, action: str) -> None:
        if self._state is not Lifecycle.CREATED:
            raise StateError(f"cannot {action} {self._label()}: it is {self._state.value}, "
                             "it must be created first (it was made with create=False: "
                             "call create() or use 'with')",
                             state=self._state, required=Lifecycle.CREATED)

    def create(self) -> Self:
        """Make the kernel objects and processes; roll everything back on failure.

        Construction calls this unless given ``create=False``; call it yourself
        only for an object described that way.

        Raises:
            StateError: when called twice or after close().
            ConfigError, NotFoundError, NetworkError, HostError: see the subclass.
        """
        if self._state is not Lifecycle.NEW:
            raise StateError(f"{self._label()} is {self._state.value}; it can be created "
                             "only once (construction creates it unless create=False)",
                             state=self._state, required=Lifecycle.NEW)
        try:
            self._build(self._undo)
        except BaseException:
            self._state = Lifecycle.CLOSED
            try:
                with batch_removal():
                    self._undo.unwind()
            except NetworkError as exc:
                log.warning("rolling back %s: %s", self._label(), exc)
            raise
        self._state = Lifecycle.CREATED
        log.debug("created %s", self._label())
        return self

    def _build(self, undo: UndoStack) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Remove everything this object made. Idempotent.

        Raises:
            NetworkError: when some removal failed (all others were still attempted).
        """
        if self._state is Lifecycle.CLOSED:
            return
        self._state = Lifecycle.CLOSED
        failures: list[str] = []
        try:
            # inside a caller's batch_removal() this joins it and the removal happens there
            with batch_removal():
                failures = self._undo.unwind()
        except NetworkError as exc:
            failures.append(str(exc))
        log.debug("closed %s", self._label())
        if failures:
            raise NetworkError(f"closing {self._label()} left something behind:\n"
                               + "\n".join(failures))

    def __enter__(self) -> Self:
        if self._state is Lifecycle.NEW:
            self.create()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_state", Lifecycle.CLOSED) is Lifecycle.CREATED:
            log.warning("%s was never closed; its kernel objects remain", self._label())
