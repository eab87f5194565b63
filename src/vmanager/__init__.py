"""vmanager: script QEMU/KVM machines and the virtual networks between them.

The seed's names are the public API::

    import vmanager
    vmanager.interfaces["eth0"].ip      # the host's physical NICs (read afresh on each access)
    vmanager.all_links                  # every link: bridges, veths, taps... too
    vmanager.routes                     # the host's routes
    vmanager.sys_command(["uname", "-r"])
    vmanager.Machine, vmanager.Harddrive, vmanager.CD, vmanager.VirtualNic,
    vmanager.Switch, vmanager.Router, vmanager.Bond, vmanager.Interface
    vmanager.CloudInit, vmanager.images.build("debian-12")
"""

from __future__ import annotations

from typing import Any

from vmanager import state as _state  # noqa: F401  (registers every Machine's recorder)
from vmanager.errors import VmanagerError
from vmanager.guests import tiny_guest
from vmanager.machine import ExecResult, Machine, State

__version__ = "0.1.0"

_LAZY = {
    "Harddrive": "vmanager.storage",
    "CD": "vmanager.storage",
    "VirtualNic": "vmanager.net",
    "Switch": "vmanager.net",
    "Router": "vmanager.net",
    "Bond": "vmanager.net",
    "Interface": "vmanager.net",
    "Namespace": "vmanager.net",
    "sys_command": "vmanager.net",
    "CloudInit": "vmanager.images.cloudinit",
}


def __getattr__(name: str) -> Any:
    # ``interfaces``, ``all_links`` and ``routes`` are read from the kernel on every access, as
    # the seed's module attributes; the classes load on first use.
    import importlib
    if name == "interfaces":
        return importlib.import_module("vmanager.net").interfaces()
    if name == "all_links":
        return importlib.import_module("vmanager.net").all_links()
    if name == "routes":
        return importlib.import_module("vmanager.net").routes()
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vmanager' has no attribute {name!r}")


__all__ = [
    "CD", "Bond", "CloudInit", "ExecResult", "Harddrive", "Interface", "Machine", "Namespace",
    "Router", "State", "Switch", "VirtualNic", "VmanagerError", "__version__", "all_links",
    "interfaces", "routes", "sys_command", "tiny_guest",
]
