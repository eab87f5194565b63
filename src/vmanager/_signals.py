"""SIGTERM, SIGHUP and SIGINT as an exception, and sections they cannot split.

The CLI turns these signals into :class:`Terminated` (a ``KeyboardInterrupt``),
so ``vmanager up`` rolls back on ``kill`` or a closed terminal as it does on
Ctrl-C. A signal that arrives inside :func:`deferred` (making an object and
recording it) is raised when the section ends, so nothing is made without
being recorded for the rollback. After the first signal, later ones are noted,
not obeyed: the rollback runs to its end (SIGKILL still stops everything).
"""

from __future__ import annotations

import contextlib
import logging
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


def _handler(signum: int, _frame: FrameType | None) -> None:
    global _pending, _fired
    if _fired:
        log.warning("%s: already stopping (rolling back); SIGKILL stops at once",
                    signal.Signals(signum).name)
        return
    if _depth:
        _pending = _pending or signum
        return
    _fired = True
    raise Terminated(signum)


def install() -> bool:
    """Handle SIGTERM, SIGHUP and SIGINT as :class:`Terminated` (main thread only)."""
    global _fired, _pending
    if threading.current_thread() is not threading.main_thread():
        return False
    _fired, _pending = False, None
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    return True


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
