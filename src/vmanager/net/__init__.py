"""The networking layer: host interfaces, namespaces, switches, NICs, bonds, routers, VXLAN.

Everything talks netlink through pyroute2 with the namespace as a parameter;
nothing here changes the calling thread's namespace. Every object is a context
manager whose ``close()`` is idempotent and removes all it made.

Many objects are made and removed faster together: :class:`Group`,
:func:`teardown` and :func:`batch_removal` (one kernel clean-up pass for all).
"""

from vmanager.net._batch import batch_removal
from vmanager.net._port import Pluggable, PortLike
from vmanager.net._resource import Lifecycle
from vmanager.net.addresses import random_mac, stable_mac
from vmanager.net.bond import BOND_MODES, Bond
from vmanager.net.errors import LinkError
from vmanager.net.group import Group, teardown
from vmanager.net.host import (
    CommandResult,
    HostInterfaces,
    Interface,
    Route,
    all_links,
    interfaces,
    routes,
    sys_command,
)
from vmanager.net.namespace import Namespace, list_namespaces
from vmanager.net.nic import VirtualNic
from vmanager.net.router import Router
from vmanager.net.switch import Switch, SwitchPort
from vmanager.net.vxlan import Vxlan

__all__ = [
    "BOND_MODES",
    "Bond",
    "CommandResult",
    "Group",
    "HostInterfaces",
    "Interface",
    "Lifecycle",
    "LinkError",
    "Namespace",
    "Pluggable",
    "PortLike",
    "Route",
    "Router",
    "Switch",
    "SwitchPort",
    "VirtualNic",
    "Vxlan",
    "all_links",
    "batch_removal",
    "interfaces",
    "list_namespaces",
    "random_mac",
    "routes",
    "stable_mac",
    "sys_command",
    "teardown",
]
