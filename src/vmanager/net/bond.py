"""Bond: kernel link aggregation of several host interfaces into one port."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vmanager import validate
from vmanager.errors import ConfigError, HostError
from vmanager.net._netlink import (
    attr,
    delete_link,
    kernel_call,
    lookup,
    require,
    require_absent,
    rtnl,
)
from vmanager.net._port import PortLike, port_ifname
from vmanager.net._resource import Resource, UndoStack

log = logging.getLogger(__name__)

IFF_UP = 0x1

#: The kernel's bonding modes (``include/uapi/linux/if_bonding.h``).
BOND_MODES: dict[str, int] = {
    "balance-rr": 0,
    "active-backup": 1,
    "balance-xor": 2,
    "broadcast": 3,
    "802.3ad": 4,
    "balance-tlb": 5,
    "balance-alb": 6,
}


class Bond(Resource):
    """A bonding interface in the host namespace over ``members``.

    Constructing it creates the bond and enslaves the members; :meth:`close`
    (idempotent) or leaving ``with`` removes it. ``create=False`` only describes
    it, for :meth:`create` or ``with`` to make later.

    ``mode`` is one of :data:`BOND_MODES` (``"active-backup"``: one member carries
    traffic and another takes over when its link fails, detected by MII
    monitoring every ``miimon`` ms; ``"802.3ad"``: LACP, needs a partner that
    speaks it). A Bond can be connected to a Switch like any port (``.ifname``).
    Members are released on close and get back the up/down state they had.

    Raises:
        ConfigError: bad name/mode/miimon, fewer than one member, a member given
            twice or already enslaved elsewhere, the name exists.
        NotFoundError: a member does not exist.
        HostError: the kernel has no bonding support (CONFIG_BONDING).
        LinkError: the kernel refused.
    """

    _kind = "bond"

    def __init__(self, name: str, members: Sequence[PortLike], *,
                 mode: str = "active-backup", miimon: int = 100,
                 primary: PortLike | None = None, create: bool = True) -> None:
        super().__init__()
        self.name = validate.ifname(name, what="bond name")
        if isinstance(members, str) or not members:
            raise ConfigError(f"bond {name!r} needs a list of member interfaces")
        self.members = tuple(port_ifname(m) for m in members)
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"bond {name!r} lists a member twice: {self.members}")
        if mode not in BOND_MODES:
            raise ConfigError(f"bond mode must be one of {sorted(BOND_MODES)}, got {mode!r}")
        self.mode = mode
        if isinstance(miimon, bool) or not isinstance(miimon, int) or miimon < 0:
            raise ConfigError(f"miimon must be a non-negative number of ms, got {miimon!r}")
        self.miimon = miimon
        self.primary = port_ifname(primary) if primary is not None else None
        if self.primary is not None and self.primary not in self.members:
            raise ConfigError(f"primary {self.primary!r} is not a member of bond {name!r}")
        self._init_done(create)

    def __repr__(self) -> str:
        return f"Bond({self.name!r}, {list(self.members)!r}, mode={self.mode!r})"

    def _label(self) -> str:
        return f"bond {self.name!r}"

    @property
    def ifname(self) -> str:
        """The bond's interface name (what a Switch enslaves)."""
        return self.name

    def _build(self, undo: UndoStack) -> None:
        with rtnl() as ipr:
            require_absent(ipr, self.name, None)
            indexes = {}
            for member in self.members:
                index = require(ipr, member, None, what="bond member")
                if attr(ipr.link("get", index=index)[0], "IFLA_MASTER"):
                    raise ConfigError(f"{member!r} is already enslaved; cannot add it to "
                                      f"bond {self.name!r}")
                indexes[member] = index
            was_up = {m: bool(ipr.link("get", index=i)[0]["flags"] & IFF_UP)
                      for m, i in indexes.items()}
            try:
                ipr.link("add", **self._link_add_args())
            except NetlinkError as exc:
                if exc.code == errno.EOPNOTSUPP:
                    raise HostError(f"cannot create bond {self.name!r}: this kernel has no "
                                    "bonding support (CONFIG_BONDING)") from exc
                with kernel_call("add bond", self.name, None):
                    raise
            undo.push(f"delete bond {self.name}", lambda: delete_link(self.name, None))
            bond = require(ipr, self.name, None)
            for member, index in indexes.items():
                with kernel_call(f"enslave to bond {self.name}", member, None):
                    # the kernel only enslaves links that are down
                    ipr.link("set", index=index, state="down")
                    ipr.link("set", index=index, master=bond)
                undo.push(f"release {member}",
                          functools.partial(self._release, member, up=was_up[member]))
            if self.primary is not None:
                with kernel_call("set primary of", self.name, None):
                    ipr.link("set", index=bond, kind="bond",
                             bond_primary=indexes[self.primary])
            with kernel_call("set up", self.name, None):
                ipr.link("set", index=bond, state="up")
            for member, index in indexes.items():
                with kernel_call("set up", member, None):
                    ipr.link("set", index=index, state="up")
        log.info("created %r", self)

    def _link_add_args(self) -> dict[str, Any]:
        """The ``IPRoute.link("add", ...)`` arguments; pyroute2 maps each ``bond_*``
        key to the ``IFLA_BOND_*`` attribute of the same name in IFLA_INFO_DATA."""
        return {"ifname": self.name, "kind": "bond", "bond_mode": BOND_MODES[self.mode],
                "bond_miimon": self.miimon}

    def _release(self, member: str, *, up: bool) -> None:
        with rtnl() as ipr:
            index = lookup(ipr, member)
            if index is None:
                return
            with kernel_call(f"release from bond {self.name}", member, None):
                if attr(ipr.link("get", index=index)[0], "IFLA_MASTER"):
                    ipr.link("set", index=index, master=0)
                # the kernel leaves a released member down; give back what it had
                ipr.link("set", index=index, state="up" if up else "down")

    def _info(self) -> Any:
        with rtnl() as ipr:
            index = require(ipr, self.name, None)
            return ipr.link("get", index=index)[0].get_nested("IFLA_LINKINFO",
                                                                "IFLA_INFO_DATA")

    @property
    def active(self) -> str | None:
        """The member carrying traffic (active-backup modes), or ``None``."""
        self._require_created("read the active member of")
        data = self._info()
        index = data.get_attr("IFLA_BOND_ACTIVE_SLAVE") if data is not None else None
        if not index:
            return None
        with rtnl() as ipr:
            return str(attr(ipr.link("get", index=index)[0], "IFLA_IFNAME"))
