"""Taking over a switch another process made: its VLAN backend and ports, from the kernel.

A lab's switches are made by one command and their ports connected by later
ones (or by another process), so a :class:`~vmanager.net.Switch` object for an
existing bridge must learn how VLANs are enforced there: the bridge's own VLAN
filtering (kernel state, per port), or the switch's nftables table (the ports
and their VLANs, read back from the rules' comments). Without this, a port
connected later would land in no VLAN at all.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vmanager.errors import HostError, NetworkError, NotFoundError
from vmanager.net._netlink import attr, rtnl
from vmanager.net.host import sys_command

if TYPE_CHECKING:
    from vmanager.net.switch import Switch, SwitchPort


def adopt_state(sw: Switch) -> None:
    """Fill ``sw``'s VLAN backend and ports from the existing bridge ``sw.name``.

    Raises:
        NotFoundError: there is no such bridge.
        NetworkError: the switch should filter VLANs but neither backend is in place.
    """
    from vmanager.net.switch import NFT_TIMEOUT, _get_link
    with rtnl() as ipr:
        link = _get_link(ipr, sw.name)
        if link is None:
            raise NotFoundError(f"switch {sw.name!r} does not exist")
        data = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        kernel = bool(data is not None and data.get_attr("IFLA_BR_VLAN_FILTERING"))
        index = int(link["index"])
        enslaved = {str(attr(m, "IFLA_IFNAME")) for m in ipr.link("dump")
                    if attr(m, "IFLA_MASTER") == index}
    if kernel:
        sw.vlan_filtering, sw.vlan_backend = True, "kernel"
        return
    listed = sys_command(["nft", "-j", "list", "table", "bridge", sw.nft_table],
                         timeout=NFT_TIMEOUT, check=False)
    if listed.returncode != 0:
        if sw.vlan_filtering:
            raise NetworkError(f"switch {sw.name!r} should filter VLANs, but the bridge has no "
                               f"VLAN filtering and its nftables table {sw.nft_table} is gone")
        return
    sw.vlan_filtering, sw.vlan_backend = True, "nftables"
    try:
        ports = ports_from_ruleset(json.loads(listed.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        raise HostError(f"cannot read the VLANs of switch {sw.name!r} from nftables table "
                        f"{sw.nft_table}: {exc}") from exc
    # a port whose link went away (or left the bridge) is no port any more
    sw._ports = {n: p for n, p in ports.items() if n in enslaved}


def _names(right: Any) -> list[str]:
    if isinstance(right, str):
        return [right]
    if isinstance(right, dict) and "set" in right:
        return [str(x) for x in right["set"]]
    raise ValueError(f"unexpected interface match {right!r}")


def ports_from_ruleset(doc: dict[str, Any]) -> dict[str, SwitchPort]:
    """The access ports and VLANs the ``isolate`` chain of ``nft -j`` output encodes."""
    from vmanager.net.switch import DEFAULT_VLAN, SwitchPort
    ports: dict[str, SwitchPort] = {}
    for item in doc["nftables"]:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or rule.get("chain") != "isolate":
            continue
        comment = str(rule.get("comment", ""))
        if not comment.startswith("vlan "):
            continue
        vid = int(comment.split()[1])
        for expr in rule["expr"]:
            match = expr.get("match") if isinstance(expr, dict) else None
            if match and match.get("left", {}).get("meta", {}).get("key") == "iifname":
                for name in _names(match["right"]):
                    ports[name] = SwitchPort(name, vid if vid != DEFAULT_VLAN else None)
    return ports
