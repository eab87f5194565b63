"""A lab as KubeVirt manifests, for users who move a lab to a Kubernetes cluster.

Each switch becomes a Multus ``NetworkAttachmentDefinition`` (``k8s.cni.cncf.io/v1``)
and each machine a KubeVirt ``VirtualMachine`` (``kubevirt.io/v1``) whose NICs
are bridge-bound secondary networks on those definitions, with the MAC
addresses vmanager gives them, so addresses handed out by MAC stay the same.
The pod network is not attached (``autoattachPodInterface: false``): like in the
lab, a machine reaches only its switches.

What has no one-to-one translation is listed in :attr:`Export.notes` instead of
guessed: routers (NAT and DHCP are the cluster's business: a masquerade-bound
pod interface, the CNI's IPAM), outside hosts, disk images (uploaded as
PersistentVolumeClaims, e.g. with ``virtctl image-upload``, under the claim
names given here) and the tiny guest (a ``kernelBoot`` container image that the
user builds and pushes to a registry).

>>> text = to_yaml(export(load("lab.toml")))     # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from vmanager.errors import ConfigError
from vmanager.lab.spec import Lab, MachineSpec

KUBEVIRT_API = "kubevirt.io/v1"
MULTUS_API = "k8s.cni.cncf.io/v1"
DEFAULT_IMAGE_PREFIX = "registry.invalid/vmanager"
_DNS1123 = re.compile(r"[^a-z0-9-]+")
#: CNI "type" per network flavour: a Linux bridge per node, or OVN-Kubernetes' layer-2
#: overlay (one segment across nodes, what a stretched switch is here)
NETWORK_TYPES = ("bridge", "ovn-layer2")


@dataclass
class Export:
    """The manifests (dicts, in apply order) and what could not be translated."""

    manifests: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def k8s_name(value: str) -> str:
    """A DNS-1123 label from a vmanager name (``Web_1`` -> ``web-1``)."""
    name = _DNS1123.sub("-", value.lower()).strip("-")
    if not name:
        raise ConfigError(f"{value!r} gives no usable Kubernetes name")
    return name[:63].rstrip("-")


def export(lab: Lab, *, namespace: str | None = None, network: str = "bridge",
           image_prefix: str = DEFAULT_IMAGE_PREFIX) -> Export:
    """Translate ``lab`` into KubeVirt and Multus manifests.

    ``network``: ``"bridge"`` (the CNI bridge plugin: one bridge per node; machines
    on different nodes need that bridge joined across nodes) or ``"ovn-layer2"``
    (OVN-Kubernetes secondary network, one layer-2 segment across the cluster).

    Raises:
        ConfigError: a bad ``network`` or a name without a Kubernetes form.
    """
    if network not in NETWORK_TYPES:
        raise ConfigError(f"network must be one of {', '.join(NETWORK_TYPES)}, not {network!r}")
    out = Export()
    labels = {"app.kubernetes.io/managed-by": "vmanager", "vmanager/lab": k8s_name(lab.name)}
    nad_names: dict[str, str] = {}
    for sw in lab.switches:
        nad = k8s_name(f"{lab.name}-{sw.name}")
        nad_names[sw.name] = nad
        out.manifests.append({"apiVersion": MULTUS_API, "kind": "NetworkAttachmentDefinition",
                              "metadata": _meta(nad, namespace, labels),
                              "spec": {"config": _cni_config(nad, sw.name, network,
                                                             namespace)}})
        if sw.vlan_filtering:
            out.notes.append(f"switch {sw.name}: VLAN filtering is not exported; set 'vlan' "
                             "in the NetworkAttachmentDefinition per VLAN instead")
    for m in lab.machines:
        out.manifests.append(_machine(lab, m, namespace, labels, nad_names, image_prefix,
                                      out.notes))
    for r in lab.routers:
        out.notes.append(f"router {r.name} ({r.mode}) is not exported: give machines a pod "
                         "interface with the masquerade binding for NAT, and use the "
                         "network's IPAM (or a DHCP server pod) for addresses")
    for h in lab.hosts:
        out.notes.append(f"outside host {h.name} is not exported (it stands for a network "
                         "outside the lab)")
    if lab.servers:
        out.notes.append("[servers] placement is not exported: the cluster's scheduler "
                         "places VirtualMachines (nodeSelector/affinity if it must be pinned)")
    return out


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace:
        meta["namespace"] = k8s_name(namespace)
    return meta


def _cni_config(nad: str, switch: str, network: str, namespace: str | None) -> str:
    if network == "bridge":
        config: dict[str, Any] = {"cniVersion": "0.3.1", "name": nad, "type": "bridge",
                                  "bridge": switch, "ipam": {}}
    else:
        config = {"cniVersion": "0.3.1", "name": nad, "type": "ovn-k8s-cni-overlay",
                  "topology": "layer2",
                  "netAttachDefName": f"{k8s_name(namespace or 'default')}/{nad}"}
    return json.dumps(config, sort_keys=True)


def _machine(lab: Lab, m: MachineSpec, namespace: str | None, labels: dict[str, str],
             nad_names: dict[str, str], image_prefix: str, notes: list[str]) -> dict[str, Any]:
    from vmanager.net import stable_mac
    name = k8s_name(m.name)
    interfaces, networks = [], []
    for i, nic in enumerate(m.nics):
        iface: dict[str, Any] = {"name": f"nic{i}", "bridge": {},
                                 "macAddress": (nic.mac or stable_mac(m.name, i)).lower()}
        if nic.model.startswith("virtio"):
            iface["model"] = "virtio"
        elif nic.model in ("e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet"):
            iface["model"] = nic.model
        interfaces.append(iface)
        if nic.switch is None:
            notes.append(f"machine {m.name}: NIC {i} is on no switch; exported on the pod "
                         "network with the masquerade binding")
            iface.pop("bridge")
            iface["masquerade"] = {}
            networks.append({"name": f"nic{i}", "pod": {}})
        else:
            networks.append({"name": f"nic{i}", "multus": {"networkName": nad_names[nic.switch]}})
        if nic.vlan or nic.vlans:
            notes.append(f"machine {m.name}: NIC {i}'s VLANs are not exported")
    disks: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    domain: dict[str, Any] = {
        "cpu": {"cores": m.cpus},
        "memory": {"guest": f"{m.memory}Mi"},
        "resources": {"requests": {"memory": f"{m.memory}Mi"}},
        "devices": {"interfaces": interfaces, "disks": disks,
                    "autoattachPodInterface": any("pod" in n for n in networks)},
    }
    for i, d in enumerate(m.disks):
        claim = k8s_name(f"{lab.name}-{m.name}-disk{i}")
        bus = {"virtio": "virtio", "scsi": "scsi", "ide": "sata", "sata": "sata"}.get(
            d.interface, "virtio")
        disks.append({"name": f"disk{i}", "disk": {"bus": bus}})
        volumes.append({"name": f"disk{i}", "persistentVolumeClaim": {"claimName": claim}})
        notes.append(f"machine {m.name}: upload {d.path} as PersistentVolumeClaim {claim} "
                     f"(virtctl image-upload pvc {claim} --image-path={d.path} ...)")
    if m.cd:
        claim = k8s_name(f"{lab.name}-{m.name}-cd")
        disks.append({"name": "cd", "cdrom": {"bus": "sata", "readonly": True}})
        volumes.append({"name": "cd", "persistentVolumeClaim": {"claimName": claim}})
        notes.append(f"machine {m.name}: upload {m.cd} as PersistentVolumeClaim {claim}")
    if m.guest == "tiny" or m.kernel:
        image = f"{image_prefix}/{name}-kernel:latest" if m.kernel else \
            f"{image_prefix}/tiny-guest:latest"
        boot: dict[str, Any] = {"container": {"image": image, "kernelPath": "/boot/vmlinuz"}}
        if m.initrd or m.guest == "tiny":
            boot["container"]["initrdPath"] = "/boot/initrd.img"
        if m.append:
            boot["kernelArgs"] = m.append
        domain["firmware"] = {"kernelBoot": boot}
        notes.append(f"machine {m.name}: boots a kernel directly; build and push a container "
                     f"image {image} holding /boot/vmlinuz"
                     + (" and /boot/initrd.img" if "initrdPath" in boot["container"] else ""))
    if m.template is not None:
        notes.append(f"machine {m.name}: is a clone of template {m.template}, which KubeVirt "
                     "cannot resume; it is exported as a machine that boots what the lab "
                     "file gives it (the template's source's disks or guest)")
    if m.firmware == "uefi":
        # KubeVirt's OVMF, without Secure Boot (which would need SMM)
        domain.setdefault("firmware", {})["bootloader"] = {"efi": {"secureBoot": False}}
    spec: dict[str, Any] = {"domain": domain, "networks": networks}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": KUBEVIRT_API, "kind": "VirtualMachine",
            "metadata": _meta(name, namespace, labels),
            "spec": {"runStrategy": "Always",
                     "template": {"metadata": {"labels": {**labels, "vmanager/machine": name}},
                                  "spec": spec}}}


def to_yaml(result: Export) -> str:
    """The manifests as one multi-document YAML stream (``kubectl apply -f``)."""
    head = "".join(f"# NOTE: {n}\n" for n in result.notes)
    body: str = yaml.safe_dump_all(result.manifests, sort_keys=False, explicit_start=True)
    return head + body
