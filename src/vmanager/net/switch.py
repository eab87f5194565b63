"""Virtual switches: Linux bridges, optionally VLAN-aware.

VLANs use the kernel's bridge VLAN filtering where the kernel has it
(``CONFIG_BRIDGE_VLAN_FILTERING``, detected when the switch is created). Where it
does not, access ports still work: an nftables table of the ``bridge`` family,
one per switch, lets a frame go from one port to another only when both are
access ports of the same VLAN (ports connected without a VLAN are in VLAN 1,
the bridge default, as is the bridge device itself). Trunk ports need the
kernel feature.
"""

from __future__ import annotations

import errno
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pyroute2.netlink.exceptions import NetlinkError

from vmanager import validate
from vmanager.errors import ConfigError, HostError, NetworkError, NotFoundError
from vmanager.net import _pending
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
from vmanager.net.host import sys_command

log = logging.getLogger(__name__)

DEFAULT_VLAN = 1
VlanBackend = Literal["kernel", "nftables"]
NFT_TIMEOUT = 30.0


@dataclass(frozen=True)
class SwitchPort:
    """How one port is connected.

    ``vlan`` is the access (untagged, PVID) VLAN, ``vlans`` the tagged (trunk) ones;
    both are empty/``None`` on a switch without VLAN filtering.
    """

    ifname: str
    vlan: int | None = None
    vlans: frozenset[int] = frozenset()

    @property
    def is_trunk(self) -> bool:
        """Whether the port carries tagged VLANs."""
        return bool(self.vlans)


def _get_link(ipr: Any, ifname: str) -> Any:
    """The link message of ``ifname`` (one request), or ``None``."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        with kernel_call("look up", ifname, None):
            raise


def _check_vid(vid: object) -> int:
    if isinstance(vid, bool) or not isinstance(vid, int) or not 1 <= vid <= 4094:
        raise ConfigError(f"VLAN id must be an integer from 1 to 4094, got {vid!r}")
    return vid


class Switch(Resource):
    """A virtual switch: a Linux bridge in the host namespace that ports are connected to.

    Constructing it creates the bridge (the seed's "Creates a virtual switch");
    :meth:`close` (idempotent) or leaving ``with`` removes it. ``create=False``
    only describes it, for :meth:`create` or ``with`` to make later.

    With ``vlan_filtering=True`` the bridge filters by VLAN: ``connect(p, vlan=10)``
    makes an access port (frames leave untagged, untagged frames enter VLAN 10),
    ``connect(p, vlans=[10, 20])`` a trunk port carrying those VLANs tagged. A port
    connected without either stays in VLAN 1, untagged.

    >>> sw = Switch("sw0")                                  # doctest: +SKIP
    >>> sw.connect(VirtualNic("a"))                         # doctest: +SKIP
    >>> sw.close()                                          # doctest: +SKIP

    STP is off and the forward delay is 0, so ports forward at once.

    On a kernel without bridge VLAN filtering the switch enforces access VLANs
    with an nftables table of its own (:attr:`nft_table`, see the module doc;
    :attr:`vlan_backend` says which is in use) and refuses trunk ports. Ports
    enslaved to the bridge behind the switch's back are in no VLAN there.

    Raises:
        ConfigError: bad name or VLAN, the name exists, a port is already connected.
        NotFoundError: a port does not exist.
        HostError: VLAN filtering requested, and neither the kernel's bridge VLAN
            filtering nor nftables' bridge family is available.
        NetworkError: a trunk port on a kernel without bridge VLAN filtering.
        LinkError: the kernel refused a request.
    """

    _kind = "switch"

    def __init__(self, name: str, *, vlan_filtering: bool = False,
                 mtu: int | None = None, create: bool = True) -> None:
        super().__init__()
        self.name = validate.ifname(name, what="switch name")
        from vmanager.net.addresses import validate_mtu
        #: the bridge's MTU, set explicitly so the kernel keeps it (jumbo frames);
        #: ``None``: the kernel's default (the smallest port's)
        self.mtu = validate_mtu(mtu) if mtu is not None else None
        self.vlan_filtering = bool(vlan_filtering)
        #: how VLANs are enforced once created: ``"kernel"`` (bridge VLAN filtering)
        #: or ``"nftables"`` (access ports only); ``None`` without vlan_filtering
        self.vlan_backend: VlanBackend | None = None
        self._ports: dict[str, SwitchPort] = {}
        self._index: int | None = None  # the bridge's ifindex, once created
        self._init_done(create)

    def __repr__(self) -> str:
        return f"Switch({self.name!r}, vlan_filtering={self.vlan_filtering})"

    def _label(self) -> str:
        return f"switch {self.name!r}"

    @property
    def ifname(self) -> str:
        """The bridge's interface name."""
        return self.name

    @property
    def ports(self) -> dict[str, SwitchPort]:
        """The ports this object connected, by ifname (a copy)."""
        return dict(self._ports)

    def _build(self, undo: UndoStack) -> None:
        with rtnl() as ipr:
            require_absent(ipr, self.name, None)
            with kernel_call("add bridge", self.name, None):
                ipr.link("add", ifname=self.name, kind="bridge", br_stp_state=0,
                         br_forward_delay=0)
            undo.push(f"delete bridge {self.name}", lambda: delete_link(self.name, None))
            index = self._index = require(ipr, self.name, None)
            if self.vlan_filtering:
                missing = self._kernel_vlan_filtering(ipr, index)
                if missing is None:
                    self.vlan_backend = "kernel"
                else:
                    self._create_nft_table(missing, undo)
                    self.vlan_backend = "nftables"
            # pushed last so it runs first: ports leave before their VLAN rules go
            undo.push(f"disconnect ports of {self.name}", self._disconnect_all)
            # set, not given at creation: only a set MTU is kept when ports join
            extra = {"mtu": self.mtu} if self.mtu else {}
            with kernel_call("set up", self.name, None):
                ipr.link("set", index=index, state="up", **extra)

    def _kernel_vlan_filtering(self, ipr: Any, index: int) -> str | None:
        """Turn on the bridge's VLAN filtering: ``None`` when it works, else why not."""
        try:
            ipr.link("set", index=index, kind="bridge", br_vlan_filtering=1)
        except NetlinkError as exc:
            if exc.code not in (errno.EOPNOTSUPP, errno.EINVAL):
                with kernel_call("turn on VLAN filtering of", self.name, None):
                    raise
            return ("this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING; "
                    f"it answered {errno.errorcode.get(exc.code, exc.code)})")
        msg = ipr.link("get", index=index)[0]
        data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        if data is None or not data.get_attr("IFLA_BR_VLAN_FILTERING"):
            return ("this kernel ignored vlan_filtering (no bridge VLAN filtering, "
                    "CONFIG_BRIDGE_VLAN_FILTERING)")
        return None

    # -- the nftables fallback for kernels without bridge VLAN filtering ------------
    @property
    def nft_table(self) -> str:
        """This switch's table in nftables' ``bridge`` family (used by the fallback)."""
        safe = re.sub(r"[^A-Za-z0-9_]", "_", self.name)
        if safe != self.name:  # keep "a-b" and "a.b" apart
            safe += f"_{zlib.crc32(self.name.encode()):08x}"
        return f"vmanager_sw_{safe}"

    def _create_nft_table(self, missing: str, undo: UndoStack) -> None:
        log.info("switch %s: %s; enforcing access VLANs with nftables table bridge %s",
                 self.name, missing, self.nft_table)
        try:
            self._load_nft({})
        except HostError as exc:
            try:
                self._delete_nft_table()
            except HostError as cleanup:
                log.warning("switch %s: removing a half-made nft table: %s", self.name, cleanup)
            raise HostError(f"cannot make switch {self.name!r} VLAN-aware: {missing}, and "
                            "the nftables fallback failed (it needs nft and the kernel's "
                            f"CONFIG_NF_TABLES_BRIDGE): {exc}") from exc
        undo.push(f"delete nft table bridge {self.nft_table}", self._delete_nft_table)

    def _nft_ruleset(self, ports: Mapping[str, SwitchPort]) -> str:
        """The whole table for ``ports``; loading it replaces the old rules atomically.

        ``forward`` sends every frame from or to one of our ports through
        ``isolate``, which accepts it only between two ports of the same VLAN.
        ``input``/``output`` keep the bridge device itself (the host) in VLAN 1.
        Matching is by port name: this kernel may lack ``meta ibrname``.
        """
        table = self.nft_table
        members: dict[int, list[str]] = {}
        for port in ports.values():
            members.setdefault(port.vlan or DEFAULT_VLAN, []).append(port.ifname)

        def names(ifnames: Iterable[str]) -> str:
            return "{ " + ", ".join(f'"{n}"' for n in sorted(ifnames)) + " }"

        forward: list[str] = []
        isolate: list[str] = []
        local_in: list[str] = []
        local_out: list[str] = []
        if ports:
            forward = [f"iifname {names(ports)} jump isolate",
                       f"oifname {names(ports)} jump isolate"]
            # the comment names the VLAN, so another process can adopt the switch
            isolate = [f'iifname {names(m)} oifname {names(m)} accept comment "vlan {vid}"'
                       for vid, m in sorted(members.items())] + ["drop"]
        others = [n for vid, m in members.items() if vid != DEFAULT_VLAN for n in m]
        if others:
            local_in = [f"iifname {names(others)} drop"]
            local_out = [f"oifname {names(others)} drop"]

        def chain(name: str, head: str, rules: list[str]) -> list[str]:
            return [f"  chain {name} {{", *(f"    {r}" for r in [head] if head),
                    *(f"    {r}" for r in rules), "  }"]

        def hook(name: str) -> str:
            return f"type filter hook {name} priority filter; policy accept;"

        # declare (idempotent), flush, then fill: one nft transaction
        lines = [f"table bridge {table} {{",
                 *chain("forward", hook("forward"), []), *chain("isolate", "", []),
                 *chain("input", hook("input"), []), *chain("output", hook("output"), []),
                 "}", f"flush table bridge {table}", f"table bridge {table} {{",
                 *chain("forward", "", forward), *chain("isolate", "", isolate),
                 *chain("input", "", local_in), *chain("output", "", local_out), "}"]
        return "\n".join(lines) + "\n"

    def _load_nft(self, ports: Mapping[str, SwitchPort]) -> None:
        sys_command(["nft", "-f", "-"], input=self._nft_ruleset(ports), timeout=NFT_TIMEOUT)

    def _delete_nft_table(self) -> None:
        listed = sys_command(["nft", "list", "tables", "bridge"], timeout=NFT_TIMEOUT,
                             check=False)
        if f"table bridge {self.nft_table}" in listed.stdout.splitlines():
            sys_command(["nft", "delete", "table", "bridge", self.nft_table],
                        timeout=NFT_TIMEOUT)

    def connect(self, port: PortLike, *, vlan: int | None = None,
                vlans: Iterable[int] | None = None) -> SwitchPort:
        """Enslave ``port`` to the switch and bring it up.

        ``vlan`` / ``vlans`` need ``vlan_filtering=True``: see the class doc.

        Raises:
            StateError: the switch is not created.
            ConfigError: the port is connected (here or elsewhere), or VLAN options
                are bad or given to a switch without VLAN filtering.
            NotFoundError: the port does not exist in the host namespace.
            LinkError: the kernel refused.
        """
        self._require_created("connect a port to")
        ifname = port_ifname(port)
        access = _check_vid(vlan) if vlan is not None else None
        tagged = frozenset(_check_vid(v) for v in vlans) if vlans is not None else frozenset()
        if (access is not None or tagged) and not self.vlan_filtering:
            raise ConfigError(f"switch {self.name!r} was made without vlan_filtering=True; "
                              f"cannot connect {ifname!r} with VLANs")
        if access is not None and access in tagged:
            raise ConfigError(f"VLAN {access} cannot be both untagged and tagged on {ifname!r}")
        if tagged and self.vlan_backend == "nftables":
            raise NetworkError(f"cannot make {ifname!r} a trunk port of switch {self.name!r}: "
                               "tagged VLANs need the kernel's bridge VLAN filtering "
                               "(CONFIG_BRIDGE_VLAN_FILTERING), which this kernel lacks; "
                               "only access ports (vlan=) work here")
        if ifname in self._ports:
            raise ConfigError(f"{ifname!r} is already connected to switch {self.name!r}")
        if ifname == self.name:
            raise ConfigError(f"cannot connect switch {self.name!r} to itself")
        config = SwitchPort(ifname, access, tagged)
        with rtnl() as ipr:
            link = _get_link(ipr, ifname)
            if link is None:
                raise NotFoundError(f"port {ifname!r} does not exist")
            index = int(link["index"])
            master = attr(link, "IFLA_MASTER")
            if master:
                owner = attr(ipr.link("get", index=master)[0], "IFLA_IFNAME")
                raise ConfigError(f"{ifname!r} is already connected to {owner!r}")
            bridge = self._bridge_index(ipr)
            if self.vlan_backend is None:
                # nothing to set up in between: enslave and bring up in one request
                with kernel_call(f"connect to switch {self.name}", ifname, None):
                    ipr.link("set", index=index, master=bridge, state="up")
                self._ports[ifname] = config
                log.info("switch %s: connected %s", self.name, ifname)
                return config
            with kernel_call(f"connect to switch {self.name}", ifname, None):
                ipr.link("set", index=index, master=bridge)
            try:
                if self.vlan_backend == "kernel":
                    self._apply_vlans(ipr, index, config)
                elif self.vlan_backend == "nftables":
                    self._load_nft({**self._ports, ifname: config})
                with kernel_call("set up", ifname, None):
                    ipr.link("set", index=index, state="up")
            except BaseException:
                with kernel_call(f"disconnect from switch {self.name}", ifname, None):
                    ipr.link("set", index=index, master=0)
                raise
        self._ports[ifname] = config
        log.info("switch %s: connected %s%s", self.name, ifname,
                 f" vlan={access} vlans={sorted(tagged)}" if self.vlan_filtering else "")
        return config

    def _bridge_index(self, ipr: Any) -> int:
        """The bridge's ifindex (it stays the same while the bridge exists; should the
        bridge be gone, the kernel refuses the enslaving request that uses it)."""
        if self._index is None:
            self._index = require(ipr, self.name, None)
        return self._index

    def _apply_vlans(self, ipr: Any, index: int, config: SwitchPort) -> None:
        wanted: dict[int, list[str]] = {vid: [] for vid in config.vlans}
        if config.vlan is not None:
            wanted[config.vlan] = ["pvid", "untagged"]
        elif not config.vlans:
            wanted[DEFAULT_VLAN] = ["pvid", "untagged"]
        with kernel_call("set VLANs of", config.ifname, None):
            if DEFAULT_VLAN not in wanted:
                ipr.vlan_filter("del", index=index, vlan_info={"vid": DEFAULT_VLAN})
            for vid, flags in sorted(wanted.items()):
                ipr.vlan_filter("add", index=index,
                                vlan_info={"vid": vid, "flags": flags})

    def disconnect(self, port: PortLike) -> None:
        """Release ``port`` from the switch (it stays up and keeps existing).

        Raises:
            ConfigError: the port is not connected to this switch.
            LinkError: the kernel refused.
        """
        ifname = port_ifname(port)
        if ifname not in self._ports:
            raise ConfigError(f"{ifname!r} is not connected to switch {self.name!r}")
        del self._ports[ifname]
        self._release(ifname)
        if self.vlan_backend == "nftables":
            self._load_nft(self._ports)
        log.info("switch %s: disconnected %s", self.name, ifname)

    def _release(self, ifname: str, ipr: Any = None) -> None:
        if ipr is None:
            with rtnl() as own:
                self._release(ifname, own)
            return
        link = _get_link(ipr, ifname)
        if link is None or not attr(link, "IFLA_MASTER"):
            return  # the port is gone, or nothing enslaves it any more
        if attr(link, "IFLA_MASTER") != lookup(ipr, self.name):
            return
        with kernel_call(f"disconnect from switch {self.name}", ifname, None):
            ipr.link("set", index=link["index"], master=0)

    def _disconnect_all(self) -> None:
        failures = []
        if not self._ports:
            return
        if _pending.current() is not None and self.vlan_backend != "nftables":
            # the bridge is deleted in the same batch, which releases its ports; with
            # the nftables fallback they must leave before its VLAN rules go
            self._ports.clear()
            return
        with rtnl() as ipr:
            for ifname in list(self._ports):
                del self._ports[ifname]
                try:
                    self._release(ifname, ipr)
                except NetworkError as exc:
                    failures.append(str(exc))
        if failures:
            raise NetworkError("; ".join(failures))
