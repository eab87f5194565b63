"""``vmanager export --kubevirt``: manifests checked against KubeVirt's schema.

The schema below is written from KubeVirt's OpenAPI definitions (api/openapi-spec/
swagger.json: v1.VirtualMachine and what it references), restricted to the fields
the export writes and closed (``additionalProperties: false``) so that a misspelt
field fails. With ``KUBEVIRT_SWAGGER=/path/to/swagger.json`` the manifests are
also checked against KubeVirt's own file, every emitted key looked up in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from vmanager.export import export, to_yaml
from vmanager.lab import parse
from vmanager.net import stable_mac

LAB = """
[lab]
name = "Office_1"
allow_paths = ["/srv"]   # its disk and CD are outside the lab file's directory

[hosts.out]
port = "o1-up"
address = "198.51.100.1/24"

[switches.lan]
[switches.dmz]
vlan_filtering = true

[routers.gw]
trunk = "out"
subnet = "10.80.0.0/24"
trunk_address = "198.51.100.2/24"
switch = "lan"

[machines.web]
guest = "tiny"
memory = 512
cpus = 2
nics = [{ switch = "lan" }, { switch = "dmz", vlan = 10 }]

[machines.db]
disks = [{ path = "/srv/db.qcow2" }]
cd = "/srv/install.iso"
nics = [{ switch = "lan", mac = "52:54:00:AA:BB:CC", model = "e1000" }]
"""

NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
QUANTITY = {"type": "string", "pattern": "^[0-9]+(Mi|Gi)$"}


def closed(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or [],
            "additionalProperties": False}


EMPTY = closed({})
META = closed({"name": NAME, "namespace": NAME,
               "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
              ["name"])
VM_SCHEMA = closed({
    "apiVersion": {"const": "kubevirt.io/v1"}, "kind": {"const": "VirtualMachine"},
    "metadata": META,
    "spec": closed({
        "runStrategy": {"enum": ["Always", "RerunOnFailure", "Manual", "Halted", "Once",
                                 "WaitAsReceiver"]},
        "template": closed({
            "metadata": closed({"labels": {"type": "object"}}),
            "spec": closed({
                "domain": closed({
                    "cpu": closed({"cores": {"type": "integer", "minimum": 1}}),
                    "memory": closed({"guest": QUANTITY}),
                    "resources": closed({"requests": closed({"memory": QUANTITY})}),
                    "firmware": closed({"kernelBoot": closed({
                        "kernelArgs": {"type": "string"},
                        "container": closed({"image": {"type": "string"},
                                             "kernelPath": {"type": "string"},
                                             "initrdPath": {"type": "string"}},
                                            ["image"])})}),
                    "devices": closed({
                        "autoattachPodInterface": {"type": "boolean"},
                        "interfaces": {"type": "array", "items": closed({
                            "name": {"type": "string"}, "bridge": EMPTY, "masquerade": EMPTY,
                            "model": {"enum": ["virtio", "e1000", "e1000e", "ne2k_pci",
                                               "pcnet", "rtl8139"]},
                            "macAddress": {"type": "string",
                                           "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"}},
                            ["name"])},
                        "disks": {"type": "array", "items": closed({
                            "name": {"type": "string"},
                            "disk": closed({"bus": {"enum": ["virtio", "sata", "scsi", "usb"]}}),
                            "cdrom": closed({"bus": {"enum": ["sata", "scsi"]},
                                             "readonly": {"type": "boolean"}})}, ["name"])}}),
                }, ["devices"]),
                "networks": {"type": "array", "items": closed({
                    "name": {"type": "string"}, "pod": EMPTY,
                    "multus": closed({"networkName": {"type": "string"}}, ["networkName"])},
                    ["name"])},
                "volumes": {"type": "array", "items": closed({
                    "name": {"type": "string"},
                    "persistentVolumeClaim": closed({"claimName": NAME}, ["claimName"])},
                    ["name"])},
            }, ["domain"]),
        }),
    }, ["template"]),
}, ["apiVersion", "kind", "metadata", "spec"])
NAD_SCHEMA = closed({
    "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
    "kind": {"const": "NetworkAttachmentDefinition"},
    "metadata": META, "spec": closed({"config": {"type": "string"}}, ["config"])},
    ["apiVersion", "kind", "metadata", "spec"])


def manifests(**kwargs: Any) -> tuple[list[dict[str, Any]], list[str]]:
    result = export(parse(LAB, path=Path("/labs/office.toml")), **kwargs)
    return result.manifests, result.notes


def test_every_manifest_validates_against_the_schema() -> None:
    docs, _ = manifests(namespace="labs")
    kinds = [d["kind"] for d in docs]
    assert kinds == ["NetworkAttachmentDefinition"] * 2 + ["VirtualMachine"] * 2
    for doc in docs:
        schema = VM_SCHEMA if doc["kind"] == "VirtualMachine" else NAD_SCHEMA
        jsonschema.validate(doc, schema)
    # the schema does reject what KubeVirt would not take
    bad = json.loads(json.dumps(docs[2]))
    bad["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macaddress"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, VM_SCHEMA)


def test_machines_keep_their_macs_and_switches_become_networks() -> None:
    docs, notes = manifests()
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert set(by_name) == {"office-1-lan", "office-1-dmz", "web", "db"}
    web = by_name["web"]["spec"]["template"]["spec"]
    ifaces = web["domain"]["devices"]["interfaces"]
    assert [i["macAddress"] for i in ifaces] == [stable_mac("web", 0).lower(),
                                                 stable_mac("web", 1).lower()]
    assert [n["multus"]["networkName"] for n in web["networks"]] == ["office-1-lan",
                                                                     "office-1-dmz"]
    assert web["domain"]["memory"]["guest"] == "512Mi" and web["domain"]["cpu"]["cores"] == 2
    assert web["domain"]["devices"]["autoattachPodInterface"] is False
    assert "kernelBoot" in web["domain"]["firmware"]
    db = by_name["db"]["spec"]["template"]["spec"]
    assert db["domain"]["devices"]["interfaces"][0] == {
        "name": "nic0", "bridge": {}, "macAddress": "52:54:00:aa:bb:cc", "model": "e1000"}
    assert [v["persistentVolumeClaim"]["claimName"] for v in db["volumes"]] == [
        "office-1-db-disk0", "office-1-db-cd"]
    config = json.loads(by_name["office-1-lan"]["spec"]["config"])
    assert (config["type"], config["bridge"]) == ("bridge", "lan")
    joined = "\n".join(notes)
    for expected in ("router gw", "outside host out", "VLAN", "/srv/db.qcow2"):
        assert expected in joined


def test_ovn_layer2_networks() -> None:
    docs, _ = manifests(network="ovn-layer2", namespace="labs")
    config = json.loads(docs[0]["spec"]["config"])
    assert config["type"] == "ovn-k8s-cni-overlay" and config["topology"] == "layer2"
    assert config["netAttachDefName"] == "labs/office-1-lan"


def _strict(instance: Any, schema: dict[str, Any], defs: dict[str, Any], where: str) -> None:
    """Every key of ``instance`` is a property of its KubeVirt definition."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(instance, dict) and "properties" in schema:
        for key, value in instance.items():
            assert key in schema["properties"], f"{where}.{key} is not in KubeVirt's schema"
            _strict(value, schema["properties"][key], defs, f"{where}.{key}")
    elif isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            _strict(item, schema["items"], defs, f"{where}[{i}]")


@pytest.mark.skipif(not os.environ.get("KUBEVIRT_SWAGGER"),
                    reason="set KUBEVIRT_SWAGGER to KubeVirt's api/openapi-spec/swagger.json")
def test_against_kubevirts_own_openapi_file() -> None:
    defs = json.loads(Path(os.environ["KUBEVIRT_SWAGGER"]).read_text())["definitions"]
    docs, _ = manifests(namespace="labs")
    for doc in docs:
        if doc["kind"] != "VirtualMachine":
            continue
        jsonschema.validate(doc, {"$ref": "#/definitions/v1.VirtualMachine",
                                  "definitions": defs})
        _strict(doc, defs["v1.VirtualMachine"], defs, doc["metadata"]["name"])


def test_the_cli_writes_yaml_and_notes(tmp_path: Path) -> None:
    lab = tmp_path / "office.toml"
    lab.write_text(LAB)
    r = subprocess.run([sys.executable, "-m", "vmanager.cli.main", "export", "--kubevirt",
                        str(lab)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs][-2:] == ["VirtualMachine", "VirtualMachine"]
    assert "note: router gw" in r.stderr
    text = to_yaml(export(parse(LAB, path=lab)))
    assert text.startswith("# NOTE: ") and len(list(yaml.safe_load_all(text))) == 4


def test_a_clone_of_a_template_is_exported_with_a_note() -> None:
    lab = parse('[lab]\nname = "t"\n[machines.c]\nguest = "tiny"\ntemplate = "tmpl"\n',
                path=Path("/labs/t.toml"))
    result = export(lab)
    assert any("clone of template /labs/tmpl" in n for n in result.notes)
    assert len(result.manifests) == 1
