"""containerlab topology files (``*.clab.yml``) for VM nodes, read into a :class:`Lab`.

The mapping (see docs/containerlab.md for the whole story):

* ``name`` is the lab's name; nodes become machines named ``clab-<lab>-<node>``
  as containerlab names its containers (``prefix: ""`` gives the bare node name,
  ``prefix: p`` gives ``p-<lab>-<node>``);
* ``kind: linux`` nodes are machines whose ``image`` is a vmanager guest name
  (``tiny``) or a disk image file; ``kind: bridge`` nodes are switches;
  ``topology.defaults`` and ``topology.kinds`` are inherited as containerlab does
  (defaults, then the kind's settings, then the node's own);
* ``eth0`` is each machine's management NIC, on a management switch served by a
  NAT router with DHCP (``mgmt.ipv4-subnet``, default 172.20.20.0/24; a node's
  ``mgmt-ipv4`` becomes a DHCP reservation); the host gets an address on that
  switch so it reaches every node. The router's outside is an isolated
  namespace: no way out through the host's uplink;
* ``ethN`` is the machine's NIC N; each link between two machines is a switch of
  its own (a point-to-point segment), a link to a bridge node plugs the NIC into
  that switch.

Anything else gets a :class:`~vmanager.errors.LabFileError` naming the file,
the line and the field: container-only kinds and settings, unknown keys, bad
endpoints.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmanager import validate
from vmanager.errors import ConfigError, LabFileError
from vmanager.images import DISTRIBUTIONS
from vmanager.lab._check import Checker
from vmanager.lab.model import (
    DiskSpec,
    HostSpec,
    Lab,
    MachineSpec,
    NicSpec,
    RouterSpec,
    SwitchSpec,
)
from vmanager.net.addresses import stable_mac, validate_mtu

SUFFIXES = (".clab.yml", ".clab.yaml")
DEFAULT_SUBNET = "172.20.20.0/24"
#: Node settings that mean something for a VM.
NODE_KEYS = {"kind", "image", "mgmt-ipv4", "mgmt_ipv4", "cpu", "memory", "group", "labels"}
#: containerlab node settings that only make sense for containers.
CONTAINER_ONLY = {"binds", "ports", "env", "env-files", "cmd", "entrypoint", "exec", "user",
                  "network-mode", "publish", "runtime", "sandbox", "restart-policy",
                  "image-pull-policy", "auto-remove", "extras", "cpu-set", "shm-size",
                  "devices", "dns", "aliases", "sysctls", "stages", "wait-for",
                  "certificate", "healthcheck", "config", "startup-config",
                  "enforce-startup-config", "suppress-startup-config", "license", "type",
                  "SANs", "kernel", "mgmt-ipv6", "mgmt_ipv6", "startup-delay", "components",
                  "cap-add", "memory-reservation"}
#: containerlab kinds other than linux/bridge: container images of network OSes.
CONTAINER_KINDS = {"srl", "nokia_srlinux", "ceos", "arista_ceos", "crpd", "juniper_crpd",
                   "sonic-vs", "sonic-vm", "cvx", "host", "ovs-bridge", "ext-container",
                   "keysight_ixia-c-one", "ipinfusion_ocnos", "checkpoint_cloudguard",
                   "c8000", "cisco_c8000", "xrd", "cisco_xrd", "rare", "k8s-kind",
                   "fortinet_fortigate", "mysocketio", "generic_vm", "huawei_vrp",
                   "openbsd", "freebsd", "cisco_iol", "6wind_vsr", "arista_veos"}
MGMT_KEYS = {"network", "bridge", "ipv4-subnet", "ipv4_subnet", "ipv4-gw", "mtu",
             "external-access"}


def is_clab(path: str | Path) -> bool:
    """Whether ``path`` names a containerlab topology file (``*.clab.yml``/``.yaml``)."""
    return str(path).endswith(SUFFIXES)


def _positions(source: str) -> dict[tuple[str, ...], int]:
    """The line of every key and item of a YAML document, by its path."""
    import yaml
    found: dict[tuple[str, ...], int] = {}

    def walk(node: Any, where: tuple[str, ...]) -> None:
        found.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = (*where, str(key.value))
                found[path] = key.start_mark.line + 1
                walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*where, str(i)))

    root = yaml.compose(source, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return found


def parse(source: str, *, path: str | Path) -> Lab:
    """Validate containerlab YAML ``source`` (``path`` names it and anchors image paths)."""
    import yaml
    p = Path(path)
    try:
        data = yaml.safe_load(source)
        lines = _positions(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise LabFileError(f"not valid YAML: {exc}", path=str(p),
                           line=mark.line + 1 if mark is not None else None) from exc

    def locate(where: tuple[str, ...]) -> int | None:
        for end in range(len(where), -1, -1):
            if where[:end] in lines:
                return lines[where[:end]]
        return None

    c = Checker(p, source, locate)
    top = c.table(data if data is not None else {}, ())
    c.keys(top, (), {"name", "prefix", "mgmt", "topology"}, {"name", "topology"})
    name = c.check(("name",), lambda: validate.name(top["name"], what="lab name"))
    prefix = c.typed(top, "prefix", str, (), "clab")
    topo = c.table(top["topology"], ("topology",))
    c.keys(topo, ("topology",), {"nodes", "defaults", "kinds", "links"}, {"nodes"})
    tag = "cl" + hashlib.sha256(name.encode()).hexdigest()[:6]
    defaults = c.table(topo.get("defaults") or {}, ("topology", "defaults"))
    kinds = c.table(topo.get("kinds") or {}, ("topology", "kinds"))
    base = p.parent

    machines: dict[str, dict[str, Any]] = {}
    bridges: dict[str, SwitchSpec] = {}
    for node, raw in c.table(topo["nodes"], ("topology", "nodes")).items():
        where = ("topology", "nodes", str(node))
        settings = _merge(c, defaults, kinds, raw, where)
        kind, kwhere = settings.get("kind", ("linux", where))
        if kind == "bridge":
            c.check(where, validate.ifname, node, what="bridge node name")
            bridges[node] = SwitchSpec(node)
            continue
        if kind != "linux":
            if kind in CONTAINER_KINDS:
                raise c.fail(kwhere, f"kind {kind!r} is a container image kind; vmanager "
                             "runs VM nodes of kind 'linux' (and 'bridge' nodes)")
            raise c.fail(kwhere, f"unknown kind {kind!r}; vmanager supports 'linux' and "
                         "'bridge'")
        made = _machine(c, name, prefix, str(node), settings, where, base)
        for other in machines.values():
            if made["disks"] and other["disks"] == made["disks"]:
                raise c.fail(settings["image"][1], f"nodes {other['name']!r} and "
                             f"{made['name']!r} would write into one disk image; give each "
                             "node its own")
        machines[str(node)] = made

    mgmt = _mgmt(c, top.get("mgmt"), tag)
    link_switches, plugs = _links(c, topo.get("links") or [], machines, bridges, tag)
    reservations = _reservations(c, machines, mgmt)
    specs = []
    for node, m in machines.items():
        width = max([k for (n, k) in plugs if n == node] + [0])
        nics = [NicSpec(switch=mgmt["switch"].name, mtu=mgmt["switch"].mtu)]
        for k in range(1, width + 1):
            sw, mtu = plugs.get((node, k), (None, None))
            nics.append(NicSpec(switch=sw, mtu=mtu))
        specs.append(MachineSpec(m["name"], guest=m["guest"], memory=m["memory"],
                                 cpus=m["cpus"], disks=m["disks"], nics=tuple(nics)))
    router = RouterSpec(f"{tag}r", "nat", f"{tag}o", switch=mgmt["switch"].name,
                        subnet=str(mgmt["subnet"]), trunk_address="198.18.0.2/30",
                        gateway="198.18.0.1", dhcp=True, dns=True,
                        dhcp_hosts=tuple(reservations))
    host = HostSpec(f"{tag}o", f"{tag}u", "198.18.0.1/30")
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return Lab(name=name, path=p, digest=digest, machines=tuple(specs),
               switches=(mgmt["switch"], *bridges.values(), *link_switches),
               routers=(router,), hosts=(host,), source=source)


def _merge(c: Checker, defaults: Mapping[str, Any], kinds: Mapping[str, Any], raw: object,
           where: tuple[str, ...]) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """defaults <- kinds[kind] <- node, each value with where it was written."""
    node = c.table(raw if raw is not None else {}, where)
    layers: list[tuple[Mapping[str, Any], tuple[str, ...]]] = [
        (defaults, ("topology", "defaults"))]
    kind = node.get("kind", defaults.get("kind", "linux"))
    if isinstance(kind, str) and kind in kinds:
        layers.append((c.table(kinds[kind], ("topology", "kinds", kind)),
                       ("topology", "kinds", kind)))
    layers.append((node, where))
    merged: dict[str, tuple[Any, tuple[str, ...]]] = {}
    for layer, lwhere in layers:
        for key, value in layer.items():
            kwhere = (*lwhere, str(key))
            if key in CONTAINER_ONLY:
                raise c.fail(kwhere, f"{key!r} is a container setting; a VM node has no "
                             "equivalent (see docs/containerlab.md)")
            if key not in NODE_KEYS:
                raise c.fail(kwhere, f"unknown node key {key!r}; for VM nodes: "
                             f"{', '.join(sorted(NODE_KEYS))}")
            merged[str(key)] = (value, kwhere)
    return merged


def _machine(c: Checker, lab: str, prefix: str, node: str,
             s: Mapping[str, tuple[Any, tuple[str, ...]]], where: tuple[str, ...],
             base: Path) -> dict[str, Any]:
    full = f"{prefix}-{lab}-{node}" if prefix else node
    c.check(where, lambda: validate.name(full, what="machine name (prefix-lab-node)"))
    if "image" not in s:
        raise c.fail(where, "a linux node needs image: a vmanager guest ('tiny') or a disk "
                     "image file")
    image, iwhere = s["image"]
    guest: str | None = None
    disks: tuple[DiskSpec, ...] = ()
    if image == "tiny" or image in DISTRIBUTIONS:
        guest = str(image)  # the tiny guest, or an overlay of an image vmanager builds
    else:
        file = (base / str(image)).resolve()
        if not file.is_file():
            raise c.fail(iwhere, f"image {image!r} is neither a vmanager guest ('tiny', "
                         f"{', '.join(sorted(DISTRIBUTIONS))}) nor a disk image file "
                         "(container images cannot boot as VMs)")
        with open(file, "rb") as f:
            fmt = "qcow2" if f.read(4) == b"QFI\xfb" else "raw"
        disks = (DiskSpec(str(file), None, fmt),)
    memory = 256
    if "memory" in s:
        value, mwhere = s["memory"]
        text = str(value).strip()
        if text[-1:] in "bB" and text[-2:-1].isalpha():
            text = text[:-1]  # containerlab writes "1Gb", "512MB"
        memory = c.check(mwhere, validate.memory_mib, text)
    cpus = 1
    if "cpu" in s:
        value, cwhere = s["cpu"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                1 <= value <= 255 and float(value).is_integer()):
            raise c.fail(cwhere, f"cpu must be a whole number of CPUs 1..255, not {value!r}")
        cpus = int(value)
    mgmt_ip = None
    for key in ("mgmt-ipv4", "mgmt_ipv4"):
        if key in s:
            value, awhere = s[key]
            try:
                mgmt_ip = (ipaddress.IPv4Address(str(value)), awhere)
            except ValueError:
                raise c.fail(awhere, f"{value!r} is not an IPv4 address") from None
    return {"name": full, "guest": guest, "disks": disks, "memory": memory, "cpus": cpus,
            "mgmt_ip": mgmt_ip, "where": where, "image": str(image)}


def _mgmt(c: Checker, raw: object, tag: str) -> dict[str, Any]:
    where = ("mgmt",)
    body = c.table(raw if raw is not None else {}, where)
    for key in body:
        if key in ("ipv6-subnet", "ipv6_subnet", "ipv6-gw"):
            raise c.fail((*where, key), "IPv6 management is not supported yet")
    c.keys(body, where, MGMT_KEYS)
    if body.get("external-access"):
        raise c.fail((*where, "external-access"), "a way out through the host's uplink is not "
                     "supported: the management router's outside is an isolated namespace")
    subnet_key = "ipv4-subnet" if "ipv4-subnet" in body else "ipv4_subnet"
    text = c.typed(body, subnet_key, str, where, DEFAULT_SUBNET)
    try:
        subnet = ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise c.fail((*where, subnet_key), f"{text!r} is not an IPv4 network such as "
                     "172.20.20.0/24") from None
    if subnet.prefixlen > 28:
        raise c.fail((*where, subnet_key), f"{subnet} is too small for a management network")
    hosts = list(subnet.hosts())
    if "ipv4-gw" in body and str(body["ipv4-gw"]) != str(hosts[0]):
        raise c.fail((*where, "ipv4-gw"), f"the management gateway is the router, at the "
                     f"subnet's first address {hosts[0]}")
    bridge = c.typed(body, "bridge", str, where, f"{tag}m")
    c.check((*where, "bridge"), validate.ifname, bridge, what="management bridge")
    mtu = c.typed(body, "mtu", int, where)
    if mtu is not None:
        c.check((*where, "mtu"), validate_mtu, mtu)
    # the host's address: the top of the lower half (DHCP hands out the upper half)
    host_ip = hosts[len(hosts) // 2 - 1]
    return {"subnet": subnet, "hosts": hosts, "host_ip": host_ip, "mtu": mtu,
            "switch": SwitchSpec(bridge, mtu=mtu, address=f"{host_ip}/{subnet.prefixlen}")}


def _endpoint(c: Checker, text: object, where: tuple[str, ...],
              machines: Mapping[str, Any], bridges: Mapping[str, SwitchSpec]) -> tuple[str, int]:
    if not isinstance(text, str) or text.count(":") != 1:
        raise c.fail(where, f"endpoint {text!r} is not 'node:interface'")
    node, iface = text.split(":")
    if node in bridges:
        return node, -1
    if node not in machines:
        raise c.fail(where, f"endpoint {text!r}: no node {node!r} in topology.nodes")
    if iface == "eth0":
        raise c.fail(where, f"endpoint {text!r}: eth0 is the management NIC; links use "
                     "eth1, eth2...")
    if not (iface.startswith("eth") and iface[3:].isdigit() and int(iface[3:]) >= 1):
        raise c.fail(where, f"endpoint {text!r}: VM interfaces are named eth1, eth2... "
                     "(NIC N is ethN)")
    index = int(iface[3:])
    if index > 64:
        raise c.fail(where, f"endpoint {text!r}: at most 64 NICs per node")
    return node, index


def _links(c: Checker, raw: object, machines: Mapping[str, Any],
           bridges: Mapping[str, SwitchSpec], tag: str
           ) -> tuple[list[SwitchSpec], dict[tuple[str, int], tuple[str, int | None]]]:
    if not isinstance(raw, list):
        raise c.fail(("topology", "links"), "must be a list of links")
    switches: list[SwitchSpec] = []
    plugs: dict[tuple[str, int], tuple[str, int | None]] = {}
    for i, item in enumerate(raw):
        where = ("topology", "links", str(i))
        body = c.table(item, where)
        c.keys(body, where, {"endpoints", "mtu", "vars", "labels"}, {"endpoints"})
        ends = body["endpoints"]
        if not isinstance(ends, list) or len(ends) != 2:
            raise c.fail((*where, "endpoints"), "a link has two endpoints, e.g. "
                         "[\"r1:eth1\", \"r2:eth1\"]")
        mtu = c.typed(body, "mtu", int, where)
        if mtu is not None:
            c.check((*where, "mtu"), validate_mtu, mtu)
        found = [_endpoint(c, e, (*where, "endpoints", str(j)), machines, bridges)
                 for j, e in enumerate(ends)]
        on_bridge = [n for n, k in found if k < 0]
        if len(on_bridge) == 2:
            raise c.fail((*where, "endpoints"), "a link between two bridge nodes is not "
                         "supported")
        if on_bridge:
            switch = on_bridge[0]
        else:
            switch = f"{tag}l{i}"
            switches.append(SwitchSpec(switch, mtu=mtu))
        for j, (node, index) in enumerate(found):
            if index < 0:
                continue
            if (node, index) in plugs:
                raise c.fail((*where, "endpoints", str(j)), f"{node}:eth{index} is already "
                             "used by another link")
            plugs[(node, index)] = (switch, mtu)
    return switches, plugs


def _reservations(c: Checker, machines: Mapping[str, Any],
                  mgmt: Mapping[str, Any]) -> list[tuple[str, str]]:
    subnet, hosts = mgmt["subnet"], mgmt["hosts"]
    taken: dict[ipaddress.IPv4Address, str] = {hosts[0]: "the management router",
                                                mgmt["host_ip"]: "the host"}
    out = []
    for node, m in machines.items():
        if m["mgmt_ip"] is None:
            continue
        ip, where = m["mgmt_ip"]
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise c.fail(where, f"{ip} is not a host address of the management subnet "
                         f"{subnet}")
        if ip in taken:
            raise c.fail(where, f"{ip} is already {taken[ip]}'s address")
        taken[ip] = f"node {node}"
        out.append((stable_mac(m["name"], 0), str(ip)))
    return out


def load(path: str | Path) -> Lab:
    """Read and validate a containerlab topology file."""
    p = Path(path)
    try:
        source = p.read_text()
    except OSError as exc:
        raise LabFileError(f"cannot read: {exc.strerror}", path=str(p)) from exc
    try:
        return parse(source, path=p)
    except LabFileError:
        raise
    except ConfigError as exc:
        raise LabFileError(str(exc), path=str(p)) from exc
