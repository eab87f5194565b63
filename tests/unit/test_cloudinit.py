"""CloudInit: validation names the field; the seed is NoCloud's layout on a 'cidata' ISO."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmanager import CloudInit
from vmanager.errors import ConfigError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0n6C7x0bqI6wq0pJ2j0bqI6wq0pJ2j0bqI6wq0pJ2 me@host"


def user_data(ci: CloudInit) -> dict[str, Any]:
    text = ci.user_data_text()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_users_get_keys_password_and_sudo() -> None:
    ci = CloudInit(hostname="web.example.org", users=["alice", {"name": "bob", "uid": 2000}],
                   ssh_authorized_keys=[KEY + "\n"], password="s3cret: yes",
                   runcmd=["echo hi > /x", ["touch", "/y"]], packages=["curl", "jq=1.6-2"])
    doc = user_data(ci)
    alice, bob = doc["users"]
    assert alice["name"] == "alice" and alice["ssh_authorized_keys"] == [KEY]
    assert alice["plain_text_passwd"] == "s3cret: yes" and alice["lock_passwd"] is False
    assert bob == {"name": "bob", "uid": 2000}
    assert doc["hostname"] == "web" and doc["fqdn"] == "web.example.org"
    assert doc["runcmd"] == ["echo hi > /x", ["touch", "/y"]]
    assert doc["packages"] == ["curl", "jq=1.6-2"] and doc["ssh_pwauth"] is True
    meta = yaml.safe_load(ci.meta_data_text())
    assert meta["local-hostname"] == "web.example.org"
    assert meta["instance-id"] == ci.instance_id


def test_default_user_and_instance_id_follows_content() -> None:
    a = CloudInit(ssh_authorized_keys=[KEY], password="pw")
    doc = user_data(a)
    assert "users" not in doc and doc["ssh_authorized_keys"] == [KEY]
    assert doc["password"] == "pw" and doc["chpasswd"] == {"expire": False}
    assert a.instance_id == CloudInit(ssh_authorized_keys=[KEY], password="pw").instance_id
    assert a.instance_id != CloudInit(password="other").instance_id
    assert CloudInit(instance_id="fixed").instance_id == "fixed"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"hostname": "bad_host!"}, "hostname"),
    ({"hostname": 5}, "hostname"),
    ({"users": "alice"}, "users"),
    ({"users": ["Root Name"]}, "users[0]"),
    ({"users": [{"name": "ok", "favourite": 1}]}, "users[0]"),
    ({"users": [{"name": "ok", "ssh_authorized_keys": ["nope"]}]},
     "users[0].ssh_authorized_keys[0]"),
    ({"ssh_authorized_keys": ["not a key"]}, "ssh_authorized_keys[0]"),
    ({"ssh_authorized_keys": KEY}, "ssh_authorized_keys"),
    ({"password": "two\nlines"}, "password"),
    ({"password": ""}, "password"),
    ({"runcmd": [["ls", 3]]}, "runcmd[0][1]"),
    ({"runcmd": [[]]}, "runcmd[0]"),
    ({"packages": ["curl; rm -rf /"]}, "packages[0]"),
    ({"network_config": {"ethernets": {}}}, "network_config"),
    ({"network_config": [1]}, "network_config"),
    ({"user_data": {"write_files": [{"content": object()}]}}, "user_data.write_files[0].content"),
    ({"instance_id": " "}, "instance_id"),
])
def test_bad_values_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"cloud_init.{field}".replace("[", r"\[")
                       .replace("]", r"\]")):
        CloudInit(**kwargs)


def test_from_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="hostnme"):
        CloudInit.from_mapping({"hostnme": "x"})
    ci = CloudInit.from_mapping({"hostname": "x", "network_config": {"version": 2}})
    assert ci.network_config == {"version": 2}


def test_seed_iso_holds_the_nocloud_files(tmp_path: Path) -> None:
    net = {"version": 2, "ethernets": {"ens3": {"dhcp4": True}}}
    ci = CloudInit(hostname="h1", network_config=net)
    with ci.seed() as cd:
        iso = cd.path
        label = subprocess.run(["xorriso", "-indev", str(iso), "-pvd_info"],
                               capture_output=True, text=True, check=True).stdout
        assert "Volume Id    : cidata" in label
        out = tmp_path / "x"
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/",
                        str(out)], capture_output=True, check=True)
        assert sorted(p.name for p in out.iterdir()) == ["meta-data", "network-config",
                                                         "user-data"]
        assert yaml.safe_load((out / "network-config").read_text()) == net
        assert (out / "user-data").read_text() == ci.user_data_text()
    assert not iso.exists()


def test_lab_file_takes_an_image_guest_and_a_cloud_init_table() -> None:
    from vmanager.lab.spec import load
    lab = load(Path(__file__).resolve().parents[2] / "examples" / "debian-lab.toml")
    deb = next(m for m in lab.machines if m.name == "deb1")
    assert deb.guest == "debian-12"
    assert deb.definition()["cloud_init"]["users"] == ["alice"]


@pytest.mark.parametrize(("body", "field"), [
    ('guest = "debian-12"\n[machines.m1.cloud_init]\nusers = ["Bad Name"]\n',
     "machines.m1.cloud_init"),
    ('guest = "debian-12"\ncloud_init = "hostname=x"\n', "machines.m1.cloud_init"),
    ('guest = "windows"\n', "machines.m1.guest"),
])
def test_lab_file_cloud_init_errors_name_the_field(body: str, field: str) -> None:
    from vmanager.errors import LabFileError
    from vmanager.lab.spec import parse
    with pytest.raises(LabFileError) as info:
        parse('[lab]\nname = "l"\n[machines.m1]\n' + body)
    assert info.value.field == field


def test_to_mapping_round_trips() -> None:
    ci = CloudInit(hostname="h", users=["alice", {"name": "bob"}], password="pw",
                   ssh_authorized_keys=[KEY], runcmd=["true", ["ls", "/"]], packages=["jq"],
                   network_config={"version": 2}, user_data={"timezone": "UTC"})
    again = CloudInit.from_mapping(ci.to_mapping())
    assert again.user_data_text() == ci.user_data_text()
    assert again.meta_data_text() == ci.meta_data_text()
    assert again.instance_id == ci.instance_id
