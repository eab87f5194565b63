"""Live tools on a running lab: impair a machine's NIC, capture on any port.

A target names where: ``MACHINE:INDEX`` is NIC ``INDEX`` of a machine (its
sink, beside the machine, in the machine's namespace), a router's name is its
LAN port, a host's name its port, a switch's name the bridge itself (frames
the switch floods or sends to the host).

Impairments set here are live only: the lab file's ``impair`` keys are applied
again whenever the machine (re)starts.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager.errors import ConfigError, NotFoundError, StateError
from vmanager.lab import record as labrec
from vmanager.lab.model import Lab
from vmanager.net import impair
from vmanager.net.impair import Impairment

if TYPE_CHECKING:
    from typing import IO

    from vmanager.net.capture import Capture


@dataclass(frozen=True)
class Port:
    """Where a target lives: interface, namespace, and what to call it."""

    ifname: str
    netns: str | None
    label: str
    machine: str | None = None
    index: int | None = None


def resolve(lab: Lab, target: str) -> Port:
    """The interface ``target`` names in ``lab`` (see the module docstring).

    Raises:
        ConfigError: a target that names nothing in the lab (listing what does).
        StateError: the lab is not up.
    """
    from vmanager.net import VirtualNic, stable_mac
    if labrec.load(lab.name) is None:
        raise StateError(f"lab {lab.name!r} is not up")
    name, colon, index = target.partition(":")
    if colon:
        try:
            spec = lab.machine(name)
        except KeyError:
            raise ConfigError(f"{target!r}: lab {lab.name!r} has no machine {name!r}; it "
                              f"has {', '.join(m.name for m in lab.machines) or 'none'}"
                              ) from None
        if not index.isdigit() or int(index) >= len(spec.nics):
            raise ConfigError(f"{target!r}: machine {name!r} has NICs 0 to "
                              f"{len(spec.nics) - 1}" if spec.nics else
                              f"{target!r}: machine {name!r} has no NICs")
        k = int(index)
        nic = VirtualNic(namespace=name, mac=spec.nics[k].mac or stable_mac(name, k),
                         create=False)  # for its names only
        return Port(nic.sink, name, f"{name}:{k}", name, k)
    for router in lab.routers:
        if router.name == target:
            item = labrec.load(lab.name)
            found = item.find("router", target) if item else None
            if found is None:
                raise StateError(f"router {target!r} of lab {lab.name!r} is not up")
            return Port(str(found["lan_port"]), None, f"router {target}")
    for host in lab.hosts:
        if host.name == target:
            return Port(host.port, None, f"host {target}")
    for sw in lab.switches:
        if sw.name == target:
            return Port(sw.name, None, f"switch {target}")
    raise ConfigError(f"{target!r} is not MACHINE:INDEX, a router, host or switch of lab "
                      f"{lab.name!r}")


def _machine_port(lab: Lab, target: str) -> Port:
    port = resolve(lab, target)
    if port.machine is None:
        raise ConfigError(f"{target!r}: impairments go on a machine's NIC (MACHINE:INDEX)")
    from vmanager.net.adopt import namespace_exists
    if not namespace_exists(port.machine):
        raise NotFoundError(f"machine {port.machine!r} of lab {lab.name!r} is not running")
    return port


def impair_nic(lab: Lab, target: str, wanted: Impairment) -> Impairment:
    """Impair what machine NIC ``target`` sends (replacing any impairment); returns it."""
    port = _machine_port(lab, target)
    impair.apply(port.ifname, port.netns, wanted)
    return impair.read(port.ifname, port.netns)


def clear_nic(lab: Lab, target: str) -> None:
    """Remove the impairment of machine NIC ``target``."""
    port = _machine_port(lab, target)
    impair.clear(port.ifname, port.netns)


def nic_impairment(lab: Lab, target: str) -> Impairment:
    """What the kernel applies to machine NIC ``target`` now."""
    port = _machine_port(lab, target)
    return impair.read(port.ifname, port.netns)


def capture(lab: Lab, target: str, path: str | os.PathLike[str] | IO[bytes], *,
            count: int | None = None, duration: float | None = None,
            filter: str | None = None) -> Capture:
    """A (not yet started) :class:`~vmanager.net.capture.Capture` on ``target``."""
    from vmanager.net.capture import Capture
    port = resolve(lab, target)
    if port.machine is not None:
        from vmanager.net.adopt import namespace_exists
        if not namespace_exists(port.machine):
            raise NotFoundError(f"machine {port.machine!r} of lab {lab.name!r} is not "
                                "running")
    return Capture(port.ifname, netns=port.netns, path=path, count=count, duration=duration,
                   filter=filter)


def _captures_dir(lab: str) -> Path:
    from vmanager import paths
    return paths.private_dir(labrec.labs_dir() / "captures" / lab)


@contextlib.contextmanager
def registered(lab: Lab, target: str, cap: Capture) -> Iterator[None]:
    """Note a running capture of ``lab`` while the block runs (for :func:`active_captures`)."""
    pid = cap.pid
    safe = "".join(ch if ch.isalnum() else "_" for ch in target)
    entry = _captures_dir(lab.name) / f"{safe}.{pid}.json"
    entry.write_text(json.dumps({"target": target, "pid": pid, "file": str(cap.path),
                                 "ifname": cap.ifname, "netns": cap.netns}))
    try:
        yield
    finally:
        entry.unlink(missing_ok=True)


def active_captures(lab: str) -> dict[str, dict[str, Any]]:
    """Captures running on lab ``lab`` by target (entries of exited tcpdumps are dropped)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in sorted(_captures_dir(lab).glob("*.json")):
        try:
            data = json.loads(entry.read_text())
            pid = int(data["pid"])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                alive = b"tcpdump" in f.read()
        except (OSError, ValueError, KeyError, TypeError):
            alive = False
            data = None
        if not alive or data is None:
            entry.unlink(missing_ok=True)
            continue
        found[str(data["target"])] = data
    return found


def stop_captures(lab: str, *, timeout: float = 5.0) -> list[str]:
    """End every capture running on lab ``lab`` (before ``down``); returns their targets.

    A running tcpdump holds its namespace, so the lab's links would outlive
    ``down``. Each gets SIGTERM (the ``vmanager capture`` that started it then
    finishes its file and exits); only processes registered here, whose command
    line is still tcpdump's, are signalled.
    """
    import signal
    import time
    stopped = []
    for target, data in active_captures(lab).items():
        pid = int(data["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)
        stopped.append(target)
    return stopped


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
