"""The lifecycle states of a Machine."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """Lifecycle of a :class:`~vmanager.Machine`."""

    DEFINED = "defined"   # built, not started (or stopped and cleaned up)
    RUNNING = "running"
    PAUSED = "paused"     # frozen: vCPUs stopped
    STOPPED = "stopped"   # QEMU exited on its own (guest power-off or crash)
