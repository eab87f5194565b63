"""Named network namespaces (``/run/netns/NAME``, the iproute2 convention).

Made in-process like ``ip netns add`` (a helper thread unshares and the result is
bind-mounted, :func:`vmanager.net._nsthread.create_netns`); removing one unmounts
and unlinks it, and the kernel then deletes every link inside in its next
clean-up pass. ``close()`` waits until that pass has removed the host ends of
veth pairs into the namespace; namespaces removed together in one
:func:`~vmanager.net.batch_removal` share one pass.
"""

from __future__ import annotations

import logging
import os

from vmanager.errors import ConfigError, NetworkError
from vmanager.net import _pending
from vmanager.net._netlink import NETNS_DIR, check_netns_name, netns_exists, netns_path
from vmanager.net._nsthread import create_netns, remove_netns
from vmanager.net._resource import Resource, UndoStack

log = logging.getLogger(__name__)


def list_namespaces() -> list[str]:
    """The names under ``/run/netns``."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


class Namespace(Resource):
    """A named network namespace that this object creates and removes.

    Constructing it makes it (``create=False`` only describes it, for
    ``create()`` or ``with``); ``close()`` removes it again. A name that
    exists already is refused rather than adopted, so closing never removes a
    namespace somebody else made.

    >>> with Namespace("lab-a") as ns:    # doctest: +SKIP
    ...     VirtualNic(namespace=ns.name)

    Raises:
        ConfigError: the name is not a safe identifier, or the namespace exists.
        NetworkError: the kernel refused to create or remove it.
    """

    _kind = "namespace"

    def __init__(self, name: str, *, create: bool = True) -> None:
        super().__init__()
        self.name = check_netns_name(name)
        self._init_done(create)

    def __repr__(self) -> str:
        return f"Namespace({self.name!r}, state={self.state.value})"

    def _label(self) -> str:
        return f"namespace {self.name!r}"

    @property
    def path(self) -> str:
        """The bind mount naming the namespace."""
        return netns_path(self.name)

    @property
    def exists(self) -> bool:
        """Whether ``/run/netns/NAME`` exists right now."""
        return netns_exists(self.name)

    def _build(self, undo: UndoStack) -> None:
        if self.exists:
            raise ConfigError(f"network namespace {self.name!r} already exists")
        try:
            create_netns(self.path)
        except FileExistsError as exc:
            raise ConfigError(f"network namespace {self.name!r} already exists") from exc
        except OSError as exc:
            raise NetworkError(f"cannot create network namespace {self.name!r}: "
                               f"{exc}") from exc
        undo.push(f"remove namespace {self.name}", self._remove)
        log.info("created network namespace %s", self.name)

    def _remove(self) -> None:
        pending = _pending.current()
        if pending is not None:  # removed, and waited for, with the batch's others
            pending.defer_namespace(self.name)
            return
        if not self.exists:
            return
        try:
            remove_netns(netns_path(self.name))
        except OSError as exc:
            raise NetworkError(f"cannot remove network namespace {self.name!r}: "
                               f"{exc}") from exc
        log.info("removed network namespace %s", self.name)
