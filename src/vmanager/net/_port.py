"""What can be plugged into a Switch, Router or Bond: anything with a host ifname."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vmanager import validate
from vmanager.errors import ConfigError


@runtime_checkable
class Pluggable(Protocol):
    """An object with a host-side interface name that a bridge or bond can enslave.

    :class:`~vmanager.net.VirtualNic` (its ``port``), :class:`~vmanager.net.Interface`,
    :class:`~vmanager.net.Bond` and :class:`~vmanager.net.Router` (its ``lan_port``)
    all qualify.
    """

    @property
    def ifname(self) -> str:
        """The interface name in the host namespace."""
        ...


PortLike = str | Pluggable


def port_ifname(port: object) -> str:
    """The host ifname of ``port`` (a str, or an object with ``.ifname``).

    Raises:
        ConfigError: the object is neither.
    """
    if isinstance(port, str):
        return validate.ifname(port, what="port name")
    if isinstance(port, Pluggable):
        return validate.ifname(port.ifname, what="port name")
    raise ConfigError(f"cannot connect {port!r}: expected an interface name, Interface, "
                      "VirtualNic, Bond or Router")
