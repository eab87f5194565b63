"""A plain veth pair: one end here (optionally on a bridge), the other in a namespace.

What a namespace that plays a host on a network needs: the simulated servers of
:mod:`vmanager.multihost` are namespaces with one veth each to an underlay bridge.
"""

from __future__ import annotations

import ipaddress
import logging
import os

from vmanager import validate
from vmanager.errors import ConfigError
from vmanager.net._netlink import (
    delete_link,
    kernel_call,
    netns_path,
    require,
    require_absent,
    rtnl,
)
from vmanager.net._resource import Resource, UndoStack

log = logging.getLogger(__name__)


class Veth(Resource):
    """A veth pair ``name`` (caller's namespace) <-> ``peer`` (in ``netns``), both up.

    ``bridge`` enslaves the near end; ``address`` (``"10.0.0.1/24"``) goes on the
    far end; ``mtu`` is set on both. Constructing makes the pair (``create=False``
    only describes it); closing deletes it (both ends).

    Raises:
        ConfigError: a bad name, address or MTU; the name is taken.
        NotFoundError: ``netns`` or ``bridge`` does not exist.
        LinkError: the kernel refused.
    """

    _kind = "veth"

    def __init__(self, name: str, *, netns: str, peer: str = "eth0",
                 bridge: str | None = None, address: str | None = None,
                 mtu: int | None = None, create: bool = True) -> None:
        super().__init__()
        self.name = validate.ifname(name, what="veth name")
        self.peer = validate.ifname(peer, what="veth peer name")
        self.netns = validate.name(netns, what="namespace name")
        self.bridge = validate.ifname(bridge, what="bridge") if bridge else None
        try:
            self.address = ipaddress.ip_interface(address) if address else None
        except ValueError as exc:
            raise ConfigError(f"{address!r} is not an address with prefix") from exc
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ConfigError(f"MTU must be 68 to 65535, got {mtu!r}")
        self.mtu = mtu
        self._init_done(create)

    def _label(self) -> str:
        return f"veth {self.name!r} <-> {self.netns}:{self.peer}"

    def _build(self, undo: UndoStack) -> None:
        extra = {"mtu": self.mtu} if self.mtu else {}
        fd = os.open(netns_path(self.netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with rtnl() as ipr:
                require_absent(ipr, self.name, None)
                with kernel_call("add veth", self.name, None):
                    ipr.link("add", ifname=self.name, kind="veth", **extra,
                             peer={"ifname": self.peer, "net_ns_fd": fd, **extra})
                undo.push(f"delete veth {self.name}", lambda: delete_link(self.name, None))
                index = require(ipr, self.name, None)
                with kernel_call("set up", self.name, None):
                    if self.bridge:
                        ipr.link("set", index=index, master=require(ipr, self.bridge, None,
                                                                     what="bridge"))
                    ipr.link("set", index=index, state="up")
        finally:
            os.close(fd)
        with rtnl(self.netns) as ipr:
            index = require(ipr, self.peer, self.netns)
            with kernel_call("configure", self.peer, self.netns):
                if self.address is not None:
                    ipr.addr("add", index=index, address=str(self.address.ip),
                             prefixlen=self.address.network.prefixlen)
                ipr.link("set", index=index, state="up")
                ipr.link("set", index=require(ipr, "lo", self.netns), state="up")
        log.info("veth %s <-> %s:%s%s", self.name, self.netns, self.peer,
                 f" {self.address}" if self.address else "")
