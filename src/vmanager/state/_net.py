"""Removing kernel network objects that another process made, by name.

The net package's objects remove only what they made themselves in this
process. Machines and labs outlive the process that built them, so their
namespaces and links are recorded by name and removed here. This module is
the single place that reaches into the net package's internals for that;
it goes once the net package offers the same publicly.
"""

from __future__ import annotations

from typing import Any

from vmanager.net import Interface, list_namespaces
from vmanager.net._netlink import delete_link
from vmanager.net._resource import Lifecycle, Resource
from vmanager.net.namespace import Namespace


def namespace_exists(name: str) -> bool:
    """Whether network namespace ``name`` exists."""
    return name in list_namespaces()


def remove_namespace(name: str) -> None:
    """Remove network namespace ``name`` (with every link inside); nothing if absent.

    The macvtap device nodes made for NICs in it (``<name>.<tap>``) go too.
    """
    if namespace_exists(name):
        Namespace(name, create=False)._remove()
    from vmanager.net.nic import _device_dir
    for node in _device_dir().glob(f"{name}.*"):
        node.unlink(missing_ok=True)


def link_exists(ifname: str, netns: str | None = None) -> bool:
    """Whether ``ifname`` exists (in ``netns``)."""
    if netns is not None and not namespace_exists(netns):
        return False
    return Interface(ifname, netns=netns).exists


def remove_link(ifname: str, netns: str | None = None) -> None:
    """Delete ``ifname`` (in ``netns``); nothing if it is gone. A veth goes with its peer."""
    delete_link(ifname, netns)


def forget(resource: Any) -> None:
    """Let a net object go without removing what it made (it now belongs to a record)."""
    if isinstance(resource, Resource):
        resource._state = Lifecycle.CLOSED
        for _what, step in resource._undo._steps:
            owner = getattr(step, "__self__", None)
            if owner is not None and owner is not resource:
                forget(owner)  # e.g. the namespace a NAT router made
        resource._undo = type(resource._undo)()


def adopt_switch(name: str, *, vlan_filtering: bool = False) -> Any:
    """A :class:`~vmanager.net.Switch` object for a bridge made earlier (maybe elsewhere).

    Ports can be connected to it; closing it removes nothing.
    """
    from vmanager.net import Switch
    from vmanager.net._resource import UndoStack
    sw = Switch(name, vlan_filtering=vlan_filtering, create=False)
    if not link_exists(name):
        from vmanager.errors import NotFoundError
        raise NotFoundError(f"switch {name!r} does not exist")
    sw._state = Lifecycle.CREATED
    sw._undo = UndoStack()
    return sw
