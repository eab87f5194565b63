"""Lab file sections ``[machines.NAME]`` (disks, NICs) and ``[[links]]``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmanager import validate
from vmanager.errors import ConfigError
from vmanager.images import DISTRIBUTIONS
from vmanager.images.cloudinit import CloudInit
from vmanager.lab import _confine, _templates
from vmanager.lab import servers as _servers
from vmanager.lab._check import Checker
from vmanager.lab.model import DiskSpec, MachineSpec, NicSpec, RouterSpec, SwitchSpec
from vmanager.net import impair
from vmanager.net.addresses import validate_mtu
from vmanager.net.impair import Impairment


def machine(c: Checker, mname: str, raw: object, switches: Mapping[str, SwitchSpec],
            path: Path, server_names: set[str]) -> MachineSpec:
    """Validate ``[machines.NAME]``."""
    switch_names = set(switches)
    where = ("machines", mname)
    body = c.table(raw, where)
    c.keys(body, where, {"guest", "kernel", "initrd", "append", "memory", "cpus", "accel",
                         "disks", "cd", "nics", "server", "cloud_init", "firmware",
                         "template"})
    c.check(where, lambda: validate.name(mname, what="machine name", max_len=15))
    guest = c.typed(body, "guest", str, where)
    if guest is not None and guest != "tiny" and guest not in DISTRIBUTIONS:
        raise c.fail((*where, "guest"), f"guest must be 'tiny' or an image ("
                     f"{', '.join(sorted(DISTRIBUTIONS))}), not {guest!r}")
    cloud_init = None
    if "cloud_init" in body:
        raw_ci = dict(c.table(body["cloud_init"], (*where, "cloud_init")))
        try:
            CloudInit.from_mapping(raw_ci)
        except ConfigError as exc:
            raise c.fail((*where, "cloud_init"), str(exc)) from exc
        cloud_init = raw_ci
    kernel = c.typed(body, "kernel", str, where)
    if guest is not None and kernel is not None:
        raise c.fail((*where, "kernel"), "give either guest or kernel, not both")
    for key in ("initrd", "append"):
        if key in body and kernel is None:
            raise c.fail((*where, key), f"{key} needs kernel")
    memory_default = 256
    cpus = c.typed(body, "cpus", int, where, 1)
    if not 1 <= cpus <= 255:
        raise c.fail((*where, "cpus"), f"must be 1 to 255, not {cpus}")
    accel = c.typed(body, "accel", str, where, "auto")
    if accel not in ("auto", "kvm", "tcg"):
        raise c.fail((*where, "accel"), f"must be auto, kvm or tcg, not {accel!r}")
    firmware = c.typed(body, "firmware", str, where, "bios")
    if firmware not in ("bios", "uefi"):
        raise c.fail((*where, "firmware"), f"must be bios or uefi, not {firmware!r}")
    base = path.parent if path.name != "<lab>" else Path.cwd()

    def resolve(value: str, key: tuple[str, ...]) -> str:
        found = c.check(key, _confine.resolve, base, value)
        if not _confine.within(found, c.allowed):
            raise c.fail(key, _confine.outside_message(found, base.resolve()))
        return str(found)

    template, template_memory = _templates.parse(c, body, where, resolve)
    memory = c.check((*where, "memory"), lambda: validate.memory_mib(
        c.typed(body, "memory", (int, str), where, template_memory or memory_default)))

    disks = []
    for i, draw in enumerate(c.typed(body, "disks", list, where, [])):
        dwhere = (*where, "disks", str(i))
        if isinstance(draw, str):
            draw = {"path": draw}
        d = c.table(draw, dwhere)
        c.keys(d, dwhere, {"path", "size", "format", "interface"}, {"path"})
        size = c.typed(d, "size", (str, int), dwhere)
        if size is not None:
            c.check((*dwhere, "size"), validate.size, size, what="disk size")
        fmt = c.typed(d, "format", str, dwhere, "qcow2")
        if fmt not in ("qcow2", "raw"):
            raise c.fail((*dwhere, "format"), f"must be qcow2 or raw, not {fmt!r}")
        disks.append(DiskSpec(resolve(c.typed(d, "path", str, dwhere), (*dwhere, "path")),
                              str(size) if size is not None else None, fmt,
                              c.typed(d, "interface", str, dwhere, "virtio")))
    cd = c.typed(body, "cd", str, where)
    if guest is None and kernel is None and not disks and cd is None and "template" not in body:
        raise c.fail(where, "nothing to boot: give guest = \"tiny\", kernel, disks, cd or "
                     "template")
    if cloud_init is not None and cd is not None:
        raise c.fail((*where, "cloud_init"), "the cloud-init seed takes the CD drive: give "
                     "cd or cloud_init, not both")
    nics = []
    for i, nraw in enumerate(c.typed(body, "nics", list, where, [])):
        nwhere = (*where, "nics", str(i))
        n = c.table(nraw, nwhere)
        c.keys(n, nwhere, {"switch", "vlan", "vlans", "mode", "model", "mac", "impair", "mtu"})
        switch = c.typed(n, "switch", str, nwhere)
        if switch is not None and switch not in switch_names:
            raise c.fail((*nwhere, "switch"), f"switch {switch!r} is not defined in "
                         "[switches]")
        vlan = c.typed(n, "vlan", int, nwhere)
        vlans = tuple(c.typed(n, "vlans", list, nwhere, []))
        for v in ((vlan,) if vlan is not None else ()) + vlans:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4094:
                raise c.fail((*nwhere, "vlan"), f"VLAN ids are 1 to 4094, not {v!r}")
        mode = c.typed(n, "mode", str, nwhere, "macvtap")
        if mode not in ("macvtap", "tap"):
            raise c.fail((*nwhere, "mode"), f"must be macvtap or tap, not {mode!r}")
        mac = c.typed(n, "mac", str, nwhere)
        if mac is not None:
            mac = c.check((*nwhere, "mac"), validate.mac, mac)
        mtu = c.typed(n, "mtu", int, nwhere)
        if mtu is not None:
            c.check((*nwhere, "mtu"), validate_mtu, mtu)
        elif switch is not None:
            mtu = switches[switch].mtu
        nics.append(NicSpec(switch, vlan, vlans, mode,
                            c.typed(n, "model", str, nwhere, "virtio-net-pci"), mac,
                            impairment(c, n, nwhere), mtu))
    return MachineSpec(mname, guest, resolve(kernel, (*where, "kernel")) if kernel else None,
                       resolve(body["initrd"], (*where, "initrd")) if "initrd" in body
                       else None,
                       c.typed(body, "append", str, where), memory, cpus, accel,
                       tuple(disks), resolve(cd, (*where, "cd")) if cd else None,
                       tuple(nics),
                       server=_servers.check_server(c, where, body, server_names),
                       cloud_init=cloud_init, firmware=firmware, template=template)


def impairment(c: Checker, body: Mapping[str, Any], where: tuple[str, ...]) -> Impairment:
    """The ``impair = { delay = "40ms", loss = "1%" }`` table of a NIC or link."""
    raw = body.get("impair")
    if raw is None:
        return Impairment()
    table = c.table(raw, (*where, "impair"))
    try:
        return impair.from_mapping(dict(table))
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        field = (*where, "impair", key) if key in table else (*where, "impair")
        raise c.fail(field, str(exc)) from exc


def apply_links(c: Checker, links: object, machines: list[MachineSpec],
                routers: list[RouterSpec],
                switches: Mapping[str, SwitchSpec]) -> list[MachineSpec]:
    """Plug the NICs and routers that ``[[links]]`` name into their switches."""
    switch_names = set(switches)
    if not isinstance(links, list):
        raise c.fail(("links",), "must be an array of tables ([[links]])")
    by_name = {m.name: m for m in machines}
    router_idx = {r.name: i for i, r in enumerate(routers)}
    for i, raw in enumerate(links):
        where = ("links", str(i))
        body = c.table(raw, where)
        c.keys(body, where, {"endpoints", "vlan", "impair", "mtu"}, {"endpoints"})
        ends = c.typed(body, "endpoints", list, where)
        if len(ends) != 2 or not all(isinstance(e, str) for e in ends):
            raise c.fail((*where, "endpoints"), "must be two names, e.g. [\"a:0\", \"lan\"]")
        sw = [e for e in ends if e in switch_names]
        other = [e for e in ends if e not in switch_names]
        if len(sw) != 1 or len(other) != 1:
            raise c.fail((*where, "endpoints"), f"{ends}: a link joins one switch to a "
                         "machine NIC ('machine:index') or a router; "
                         + ("unknown endpoint(s)" if not sw else "two switches"))
        end = other[0]
        vlan = c.typed(body, "vlan", int, where)
        if end in router_idx:
            for key in ("impair", "mtu"):
                if key in body:
                    raise c.fail((*where, key), "applies to a machine NIC, not a router")
            r = routers[router_idx[end]]
            if r.switch is not None and r.switch != sw[0]:
                raise c.fail(where, f"router {end!r} is already plugged into {r.switch!r}")
            routers[router_idx[end]] = RouterSpec(**{**r.__dict__, "switch": sw[0]})
            continue
        mname, _, index = end.partition(":")
        if mname not in by_name or (index and not index.isdigit()):
            raise c.fail((*where, "endpoints"), f"{end!r} is not a machine NIC "
                         "('machine:index') or router of this lab")
        m = by_name[mname]
        nics = list(m.nics)
        k = int(index) if index else len(nics)
        while len(nics) <= k:
            nics.append(NicSpec())
        if nics[k].switch not in (None, sw[0]):
            raise c.fail(where, f"NIC {k} of {mname!r} is already plugged into "
                         f"{nics[k].switch!r}")
        mtu = c.typed(body, "mtu", int, where)
        if mtu is not None:
            c.check((*where, "mtu"), validate_mtu, mtu)
        imp = impairment(c, body, where)
        old = nics[k]
        nics[k] = NicSpec(**{**old.__dict__, "switch": sw[0], "vlan": vlan or old.vlan,
                             "impair": imp or old.impair,
                             "mtu": mtu or old.mtu or switches[sw[0]].mtu})
        by_name[mname] = MachineSpec(**{**m.__dict__, "nics": tuple(nics)})
    return [by_name[m.name] for m in machines]
