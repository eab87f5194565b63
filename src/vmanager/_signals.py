"""SIGTERM, SIGHUP and SIGINT as an exception, and sections they cannot split.

The CLI turns these signals into :class:`Terminated` (a ``KeyboardInterrupt``),
so ``vmanager up`` rolls back on ``kill`` or a closed terminal as it does on
Ctrl-C. A signal that arrives inside :func:`deferred` (making an object and
recording it) is raised when the section ends, so nothing is made without
being recorded for the rollback. After the first signal, later ones are noted,
not obeyed: the rollback runs to its end (SIGKILL still stops everything).

The handlers are installed only for the duration of :func:`installed` and then
restored, so a program that calls the CLI in-process keeps its own. A process
forked while they are installed (a library's helper child) dies of the signal
as it would by default: the exception is meant for the process that installed
them, and raised in a forked copy it would run that copy's cleanup (a test
session's teardown, a lab's rollback) a second time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """A terminating signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_depth = 0
_pending: int | None = None
_fired = False
_owner: int | None = None


def _handler(signum: int, _frame: FrameType | None) -> None:
    global _pending, _fired
    if os.getpid() != _owner:
        # A forked child inherited the handler: die of the signal, as by default.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    if _fired:
        log.warning("%s: already stopping (rolling back); SIGKILL stops at once",
                    signal.Signals(signum).name)
        return
    if _depth:
        _pending = _pending or signum
        return
    _fired = True
    raise Terminated(signum)


@contextlib.contextmanager
def installed() -> Iterator[bool]:
    """Handle SIGTERM, SIGHUP and SIGINT as :class:`Terminated` inside the block.

    Yields whether they were installed (only the main thread can); the previous
    handlers come back when the block ends.
    """
    global _fired, _pending, _owner
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    _fired, _pending, _owner = False, None, os.getpid()
    old = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    try:
        yield True
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)
        _owner = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section a signal cannot interrupt; it is raised as the section ends."""
    global _depth, _pending, _fired
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None and not _fired:
            signum, _pending = _pending, None
            _fired = True
            raise Terminated(signum)
