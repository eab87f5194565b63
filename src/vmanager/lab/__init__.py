"""Declarative labs: TOML files of machines, switches, routers and links.

>>> lab = load("examples/demo-lab.toml")    # doctest: +SKIP
>>> up(lab); print(inspect(lab)); down(lab.name)
"""

from vmanager.lab.graph import dot, mermaid, svg
from vmanager.lab.runner import UpResult, down, start_lab_machine, up
from vmanager.lab.spec import (
    DiskSpec,
    HostSpec,
    Lab,
    MachineSpec,
    NicSpec,
    RouterSpec,
    SwitchSpec,
    load,
    parse,
)
from vmanager.lab.status import inspect

__all__ = [
    "DiskSpec", "HostSpec", "Lab", "MachineSpec", "NicSpec", "RouterSpec", "SwitchSpec",
    "UpResult", "dot", "down", "inspect", "load", "mermaid", "parse", "start_lab_machine",
    "svg", "up",
]
