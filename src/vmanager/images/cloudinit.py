"""cloud-init NoCloud seeds: what a real guest should be told on first boot.

A :class:`CloudInit` describes the first-boot setup of a cloud image (users,
keys, password, host name, commands, packages, network); :meth:`CloudInit.seed`
writes it as a NoCloud seed (``user-data``, ``meta-data``, optionally
``network-config``) on an ISO labelled ``cidata``, which cloud-init finds on
any CD drive. Values are checked when the object is made: a bad one raises
:class:`ConfigError` naming the field.

Example::

    ci = CloudInit(hostname="web", users=["alice"], password="secret",
                   ssh_authorized_keys=[Path("~/.ssh/id_ed25519.pub").expanduser().read_text()],
                   runcmd=["touch /var/tmp/first-boot"])
    with Machine("web", harddrives=disk, cloud_init=ci) as m:
        ...
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vmanager.errors import ConfigError
from vmanager.storage.cd import CD

_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_KEY_RE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|"
                     r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$")
#: Keys of a user entry passed as a mapping (cloud-init's ``users`` schema, the common ones).
USER_KEYS = frozenset({"name", "gecos", "groups", "sudo", "shell", "lock_passwd", "passwd",
                       "plain_text_passwd", "hashed_passwd", "ssh_authorized_keys", "homedir",
                       "primary_group", "system", "uid", "no_create_home", "expiredate",
                       "inactive", "ssh_import_id", "doas", "create_groups", "selinux_user",
                       "ssh_redirect_user", "snapuser", "no_user_group", "no_log_init"})
_MAX_TEXT = 1 << 20


def _text(value: object, field: str, *, line: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"cloud_init.{field} must be a string, not "
                          f"{type(value).__name__}: {value!r:.80}")
    if len(value) > _MAX_TEXT or "\0" in value or (line and ("\n" in value or "\r" in value)):
        raise ConfigError(f"cloud_init.{field} must be "
                          + ("one line" if line else "text") + " without NUL bytes")
    return value


def _strings(value: object, field: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"cloud_init.{field} must be a list, not {type(value).__name__}")
    return list(value)


def _key(value: object, field: str) -> str:
    key = _text(value, field).strip()
    if "\n" in key or not _KEY_RE.match(key):
        raise ConfigError(f"cloud_init.{field} is not an OpenSSH public key line "
                          f"(type, base64, comment): {key[:60]!r}")
    return key


class CloudInit:
    """A cloud-init configuration for a machine's first boot (a NoCloud seed).

    ``hostname``: the guest's host name. ``users``: user names (each gets a
    home, bash, passwordless sudo and ``ssh_authorized_keys``) or mappings in
    cloud-init's ``users`` schema. ``ssh_authorized_keys``: public key lines
    (for the listed users, or the image's default user when ``users`` is not
    given). ``password``: the users' (or default user's) password, enabling
    password logins on the console and SSH. ``runcmd``: commands run once at
    the end of the first boot (a string runs under ``sh -c``, a list is an
    argv). ``packages``: Debian packages to install (the guest needs to reach
    an archive). ``network_config``: a cloud-init network configuration
    (version 1 or 2) as a mapping. ``user_data``: further top-level keys
    merged into the ``#cloud-config``. ``instance_id``: defaults to a digest of
    everything else, so a changed configuration runs again on the same disk.
    """

    def __init__(self, *, hostname: str | None = None,
                 users: Sequence[str | Mapping[str, Any]] | None = None,
                 ssh_authorized_keys: Sequence[str] = (), password: str | None = None,
                 runcmd: Sequence[str | Sequence[str]] = (), packages: Sequence[str] = (),
                 network_config: Mapping[str, Any] | None = None,
                 user_data: Mapping[str, Any] | None = None,
                 instance_id: str | None = None) -> None:
        if hostname is not None:
            hostname = _text(hostname, "hostname", line=True)
            if len(hostname) > 253 or not _HOSTNAME_RE.match(hostname):
                raise ConfigError(f"cloud_init.hostname {hostname!r} is not a valid host name "
                                  "(letters, digits and '-' in dot-separated labels)")
        self.hostname = hostname
        self.ssh_authorized_keys = [_key(k, f"ssh_authorized_keys[{i}]")
                                    for i, k in enumerate(_strings(ssh_authorized_keys,
                                                                   "ssh_authorized_keys"))]
        self.password = _text(password, "password", line=True) if password is not None else None
        if self.password == "":
            raise ConfigError("cloud_init.password must not be empty (use None for no password)")
        self.users = ([self._user(u, i) for i, u in enumerate(_strings(users, "users"))]
                      if users is not None else None)
        self.runcmd: list[str | list[str]] = []
        for i, cmd in enumerate(_strings(runcmd, "runcmd")):
            if isinstance(cmd, str):
                self.runcmd.append(_text(cmd, f"runcmd[{i}]"))
            else:
                argv = [_text(a, f"runcmd[{i}][{j}]")
                        for j, a in enumerate(_strings(cmd, f"runcmd[{i}]"))]
                if not argv:
                    raise ConfigError(f"cloud_init.runcmd[{i}] is an empty argv")
                self.runcmd.append(argv)
        self.packages = []
        for i, pkg in enumerate(_strings(packages, "packages")):
            if not isinstance(pkg, str) or not _PACKAGE_RE.match(pkg):
                raise ConfigError(f"cloud_init.packages[{i}] {pkg!r} is not a package name")
            self.packages.append(pkg)
        self.network_config = self._mapping(network_config, "network_config")
        if self.network_config is not None and self.network_config.get("version") not in (1, 2):
            raise ConfigError("cloud_init.network_config must have version: 1 or 2")
        self.user_data = self._mapping(user_data, "user_data") or {}
        if instance_id is not None:
            instance_id = _text(instance_id, "instance_id", line=True)
            if not instance_id.strip():
                raise ConfigError("cloud_init.instance_id must not be blank")
        self.instance_id = instance_id or "vmanager-" + hashlib.sha256(
            self.user_data_text().encode() + json.dumps(self.network_config).encode()
        ).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"CloudInit(hostname={self.hostname!r}, instance_id={self.instance_id!r})"

    def _user(self, value: object, index: int) -> str | dict[str, Any]:
        field = f"users[{index}]"
        if isinstance(value, str):
            if not _USER_RE.match(value):
                raise ConfigError(f"cloud_init.{field} {value!r} is not a valid user name")
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"cloud_init.{field} must be a user name or a mapping")
        unknown = sorted(set(value) - USER_KEYS)
        if unknown:
            raise ConfigError(f"cloud_init.{field} has unknown keys {unknown}; cloud-init "
                              f"user keys are {sorted(USER_KEYS)}")
        name = value.get("name")
        if not isinstance(name, str) or not _USER_RE.match(name):
            raise ConfigError(f"cloud_init.{field}.name must be a valid user name, "
                              f"got {name!r}")
        keys = value.get("ssh_authorized_keys", [])
        [_key(k, f"{field}.ssh_authorized_keys[{i}]")
         for i, k in enumerate(_strings(keys, f"{field}.ssh_authorized_keys"))]
        checked: dict[str, Any] = self._plain(dict(value), field)
        return checked

    @classmethod
    def _mapping(cls, value: object, field: str) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(f"cloud_init.{field} must be a mapping (table), "
                              f"not {type(value).__name__}")
        checked: dict[str, Any] = cls._plain(dict(value), field)
        return checked

    @classmethod
    def _plain(cls, value: Any, field: str) -> Any:
        """Only YAML-safe data: strings, numbers, booleans, lists and string-keyed maps."""
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"cloud_init.{field}: key {k!r} is not a string")
                out[k] = cls._plain(v, f"{field}.{k}")
            return out
        if isinstance(value, (list, tuple)):
            return [cls._plain(v, f"{field}[{i}]") for i, v in enumerate(value)]
        raise ConfigError(f"cloud_init.{field}: {type(value).__name__} values cannot be "
                          "written to cloud-init's YAML")

    # -- the seed -------------------------------------------------------------------
    def user_data_dict(self) -> dict[str, Any]:
        """The ``#cloud-config`` document as a dict."""
        doc: dict[str, Any] = {}
        if self.hostname is not None:
            doc["hostname"] = self.hostname.split(".", 1)[0]
            if "." in self.hostname:
                doc["fqdn"] = self.hostname
            doc["preserve_hostname"] = False
        if self.users is not None:
            users: list[Any] = []
            for user in self.users:
                if isinstance(user, str):
                    entry: dict[str, Any] = {"name": user, "shell": "/bin/bash",
                                             "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                             "lock_passwd": self.password is None}
                    if self.ssh_authorized_keys:
                        entry["ssh_authorized_keys"] = list(self.ssh_authorized_keys)
                    if self.password is not None:
                        entry["plain_text_passwd"] = self.password
                    users.append(entry)
                else:
                    users.append(user)
            doc["users"] = users
        else:
            if self.ssh_authorized_keys:
                doc["ssh_authorized_keys"] = list(self.ssh_authorized_keys)
            if self.password is not None:
                doc["password"] = self.password
                doc["chpasswd"] = {"expire": False}
        if self.password is not None:
            doc["ssh_pwauth"] = True
        if self.runcmd:
            doc["runcmd"] = list(self.runcmd)
        if self.packages:
            doc["packages"] = list(self.packages)
        doc.update(self.user_data)
        return doc

    def user_data_text(self) -> str:
        """``user-data`` as written to the seed."""
        return "#cloud-config\n" + yaml.safe_dump(self.user_data_dict(), sort_keys=False,
                                                  default_flow_style=False)

    def meta_data_text(self) -> str:
        """``meta-data`` as written to the seed."""
        meta: dict[str, Any] = {"instance-id": self.instance_id}
        if self.hostname is not None:
            meta["local-hostname"] = self.hostname
        return yaml.safe_dump(meta, sort_keys=False)

    def write(self, directory: Path) -> None:
        """Write the seed's files into ``directory``."""
        (directory / "user-data").write_text(self.user_data_text())
        (directory / "meta-data").write_text(self.meta_data_text())
        if self.network_config is not None:
            (directory / "network-config").write_text(
                yaml.safe_dump(self.network_config, sort_keys=False))

    def seed(self, output: str | Path | None = None) -> CD:
        """Build the NoCloud seed ISO (volume ``cidata``) and return it as a :class:`CD`.

        Without ``output`` the ISO is temporary and owned by the CD (removed on
        ``close()``).
        """
        with tempfile.TemporaryDirectory(prefix="vmanager-seed-") as tmp:
            self.write(Path(tmp))
            return CD.from_directory(tmp, output=output, volume_id="cidata")

    def to_mapping(self) -> dict[str, Any]:
        """The keyword arguments that make this configuration again (JSON-able)."""
        out: dict[str, Any] = {"hostname": self.hostname, "users": self.users,
                               "ssh_authorized_keys": self.ssh_authorized_keys,
                               "password": self.password, "runcmd": self.runcmd,
                               "packages": self.packages, "network_config": self.network_config,
                               "user_data": self.user_data or None,
                               "instance_id": self.instance_id}
        return {k: v for k, v in out.items() if v not in (None, [], {})}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CloudInit:
        """Make one from a lab file's ``cloud_init`` table (the same keyword names)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"cloud_init must be a table, not {type(data).__name__}")
        known = {"hostname", "users", "ssh_authorized_keys", "password", "runcmd", "packages",
                 "network_config", "user_data", "instance_id"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"cloud_init: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


__all__ = ["CloudInit"]
