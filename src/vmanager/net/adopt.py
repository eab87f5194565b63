"""Kernel network objects that outlive the process that made them: release, adopt, remove.

The net package's objects remove only what they made themselves in this
process. Machines and labs outlive that process, so their namespaces and
links are recorded by name (by :mod:`vmanager.state` and :mod:`vmanager.lab`)
and, later and maybe elsewhere, adopted or removed through these calls:

* :func:`release` lets an object go without removing what it made (a record
  owns it now);
* :func:`adopt_switch`, :func:`adopt_nic` and :func:`adopt_namespace` give
  objects for what an earlier process made, which this process may then close;
* :func:`remove_namespace`, :func:`remove_link` and :func:`remove_switch_rules`
  remove by name.
"""

from __future__ import annotations

import glob
from typing import Any

from vmanager.errors import NotFoundError, StateError
from vmanager.net._netlink import delete_link
from vmanager.net._resource import Lifecycle, Resource
from vmanager.net.host import Interface
from vmanager.net.namespace import Namespace, list_namespaces
from vmanager.net.nic import VirtualNic, _device_dir


def namespace_exists(name: str) -> bool:
    """Whether network namespace ``name`` exists."""
    return name in list_namespaces()


def remove_namespace(name: str) -> None:
    """Remove network namespace ``name`` (with every link inside); nothing if absent.

    The macvtap device nodes made for NICs in it (``<name>.<tap>``) go too.
    """
    nodes = set()
    if namespace_exists(name):
        from vmanager.net._netlink import attr, rtnl
        with rtnl(name) as ipr:  # the devices in it name their nodes exactly
            nodes = {f"{name}.{attr(m, 'IFLA_IFNAME')}" for m in ipr.link("dump")}
        Namespace(name, create=False)._remove()
    # and nodes left by an earlier run: <name>.<device> where the device part has no
    # dot, so cleaning up machine "a" never takes "a.b.<device>" of machine "a.b"
    nodes |= {n.name for n in _device_dir().glob(f"{glob.escape(name)}.*")
              if "." not in n.name[len(name) + 1:]}
    for node in nodes:
        (_device_dir() / node).unlink(missing_ok=True)


def link_exists(ifname: str, netns: str | None = None) -> bool:
    """Whether ``ifname`` exists (in ``netns``)."""
    if netns is not None and not namespace_exists(netns):
        return False
    return Interface(ifname, netns=netns).exists


def remove_link(ifname: str, netns: str | None = None) -> None:
    """Delete ``ifname`` (in ``netns``); nothing if it is gone. A veth goes with its peer."""
    delete_link(ifname, netns)


def remove_switch_rules(name: str) -> None:
    """Delete the nftables table with which VLAN-aware switch ``name`` enforced its VLANs
    (a kernel without bridge VLAN filtering); nothing if there is none."""
    import shutil

    from vmanager.net import Switch
    if shutil.which("nft") is None:
        return  # without nft no such table was made
    Switch(name, create=False)._delete_nft_table()


def release(resource: Any) -> None:
    """Let a net object go without removing what it made (it now belongs to a record)."""
    if isinstance(resource, Resource):
        resource._state = Lifecycle.CLOSED
        for _what, step in resource._undo.steps():
            owner = getattr(step, "__self__", None)
            if owner is not None and owner is not resource:
                release(owner)  # e.g. the namespace a NAT router made
        resource._undo.clear()


#: The name the lab code knew it by.
forget = release


def adopt_switch(name: str, *, vlan_filtering: bool = False) -> Any:
    """A :class:`~vmanager.net.Switch` object for a bridge made earlier (maybe elsewhere).

    Ports can be connected to it, in their VLANs (the switch's VLAN backend and
    existing ports are read from the kernel and nftables); closing it removes nothing.
    """
    from vmanager.net import Switch
    from vmanager.net._switch_state import adopt_state
    sw = Switch(name, vlan_filtering=vlan_filtering, create=False)
    adopt_state(sw)  # its VLAN backend and ports: a port connected now gets its VLAN
    sw._state = Lifecycle.CREATED
    return sw


def adopt_namespace(name: str) -> Namespace:
    """A :class:`Namespace` for namespace ``name`` made earlier; closing it removes it.

    Raises :class:`NotFoundError` when it does not exist.
    """
    if not namespace_exists(name):
        raise NotFoundError(f"network namespace {name!r} does not exist")
    ns = Namespace(name, create=False)
    ns._state = Lifecycle.CREATED
    ns._undo.push(f"namespace {name}", lambda: remove_namespace(name))
    return ns


def adopt_nic(nic: VirtualNic) -> VirtualNic:
    """Take over the kernel objects of ``nic``, a new VirtualNic naming ones made earlier.

    ``nic`` is built with the ``name``, ``namespace``, ``mac``, ``model`` and
    ``kind`` of the original; afterwards it is created, so it can be plugged
    (``open_fd``) and closing it removes its links. Raises
    :class:`NotFoundError` when its link is gone.
    """
    if nic.state is not Lifecycle.NEW:
        raise StateError(f"adopt_nic takes a new VirtualNic, {nic!r} is {nic.state.value}",
                         state=nic.state, required=Lifecycle.NEW)
    ns = nic.namespace
    if not link_exists(nic.port):
        raise NotFoundError(f"the port {nic.port!r} of {nic!r} does not exist")
    undo = nic._undo
    # The same undo steps VirtualNic._build pushes, for objects made elsewhere.
    undo.push(f"delete veth {nic.port}", lambda: delete_link(nic.port, None))
    if nic.mode == "tap":
        bridge = nic.name + "b"
        undo.push(f"delete tap {nic.device}", lambda: delete_link(nic.device, ns))
        undo.push(f"delete bridge {bridge}", lambda: delete_link(bridge, ns))
    else:
        node = _device_dir() / f"{ns or '-host'}.{nic.device}"
        if node.exists():
            nic.device_node = node
            undo.push(f"remove {node}", lambda: node.unlink(missing_ok=True))
    nic._state = Lifecycle.CREATED
    return nic
