"""Undo steps run last-in first-out, every one even when some fail.

Every vmanager object that builds something on the host records how to undo
it right after building it; teardown runs the steps in reverse and collects
failures instead of stopping at the first (as the NixOS test driver's
``Driver.__exit__`` releases each machine in its own try/except).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class UndoStack:
    """Undo steps run last-in first-out; failures are collected, not fatal."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def push(self, what: str, step: Callable[[], object]) -> None:
        """Remember ``step`` (described by ``what``) to run at teardown."""
        self._steps.append((what, step))

    def steps(self) -> list[tuple[str, Callable[[], object]]]:
        """The steps not yet run, oldest first."""
        return list(self._steps)

    def clear(self) -> None:
        """Forget every step without running it (what they undo is kept)."""
        self._steps = []

    def unwind(self) -> list[str]:
        """Run every step in reverse; return a description of each that failed."""
        failures: list[str] = []
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:
                log.warning("cleanup step %r failed: %s", what, exc)
                failures.append(f"{what}: {exc}")
        return failures
