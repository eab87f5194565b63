"""Removals collected while a removal batch is open (see :mod:`vmanager.net._batch`).

This module only holds the collection and the context variable that says
whether one is open, so that the lowest layers (``delete_link``, namespace
removal) can consult it without importing the code that carries it out.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass
class Pending:
    """What the open batch will remove: links ``(ifname, netns)`` and namespace names."""

    links: list[tuple[str, str | None]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def defer_link(self, ifname: str, netns: str | None) -> None:
        """Remember to delete ``ifname`` in ``netns`` (``None``: the host)."""
        self.links.append((ifname, netns))

    def defer_namespace(self, name: str) -> None:
        """Remember to remove named namespace ``name``."""
        self.namespaces.append(name)


_current: contextvars.ContextVar[Pending | None] = contextvars.ContextVar(
    "vmanager_net_pending", default=None)


def current() -> Pending | None:
    """The open batch's collection in this thread/context, or ``None``."""
    return _current.get()


def open_batch() -> tuple[Pending, contextvars.Token[Pending | None]]:
    """Start collecting; the caller must :func:`close_batch` with the token."""
    pending = Pending()
    return pending, _current.set(pending)


def close_batch(token: contextvars.Token[Pending | None]) -> None:
    """Stop collecting (the collected removals are the caller's to carry out)."""
    _current.reset(token)
