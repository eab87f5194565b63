"""Errors of the networking layer.

All derive from the tree in :mod:`vmanager.errors`; this module only adds
:class:`LinkError`, a :class:`~vmanager.errors.NetworkError` that carries the
kernel's answer::

    NetworkError
     └── LinkError    a netlink request the kernel refused (operation, ifname, netns, errno)
"""

from __future__ import annotations

import errno as _errno
import os

from vmanager.errors import NetworkError


class LinkError(NetworkError):
    """The kernel refused a netlink request about one object.

    Attributes: ``operation`` (e.g. ``"add bridge"``), ``ifname`` (the object),
    ``netns`` (``None`` for the caller's namespace) and ``errno``.
    """

    def __init__(self, operation: str, *, ifname: str, netns: str | None,
                 errno: int | None, detail: str = "") -> None:
        where = f" in namespace {netns!r}" if netns else ""
        if errno is not None:
            name = _errno.errorcode.get(errno, str(errno))
            reason = f"{name}: {detail or os.strerror(errno)}"
        else:
            reason = detail or "unknown error"
        super().__init__(f"{operation} {ifname!r}{where} failed: {reason}")
        self.operation = operation
        self.ifname = ifname
        self.netns = netns
        self.errno = errno
