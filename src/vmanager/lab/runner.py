"""Bringing a lab up and down; inspecting it.

``up`` makes what is missing and leaves what exists (running it twice changes
nothing); every object is written to the lab record as soon as it exists, so a
crash leaves a record that ``down`` can work from. A failure during ``up``
removes what that call made, in reverse order, and re-raises.

The order is hosts, switches, routers, machines; ``down`` goes backwards and
keeps going when one removal fails, reporting all failures at the end.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmanager import _signals, logkeeper, paths
from vmanager.errors import (
    ConfigError,
    NetworkError,
    NotFoundError,
    ShutdownTimeout,
    StateError,
    VmanagerError,
)
from vmanager.lab import _objects, _owner, _templates
from vmanager.lab import record as labrec
from vmanager.lab.record import LabRecord
from vmanager.lab.spec import Lab, MachineSpec
from vmanager.net import adopt as _net
from vmanager.net import batch_removal, impair
from vmanager.net.impair import Impairment
from vmanager.state import records
from vmanager.state.lock import locked
from vmanager.state.persist import (
    PersistentMachine,
    attach,
    detach,
    machine_kwargs,
    remove_image_overlay,
    remove_state_disk,
)
from vmanager.state.process import AdoptedProcess, Liveness, ProcessIdentity
from vmanager.state.records import MachineRecord

log = logging.getLogger(__name__)

Step = Callable[[str], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _no_progress(message: str) -> Iterator[None]:
    log.info("%s", message)
    yield


@dataclass(frozen=True)
class UpResult:
    """What ``up`` did: objects made now, and objects that were already there."""

    lab: str
    made: tuple[str, ...]
    kept: tuple[str, ...]


# -- up ---------------------------------------------------------------------------------

def up(lab: Lab, *, step: Step = _no_progress, wait_ready: bool = False,
       timeout: float = 120.0) -> UpResult:
    """Make everything ``lab`` describes that is not there yet.

    Raises whatever the first failing object raised, after removing what this
    call made (``ConfigError`` for a name in use, ``NetworkError``,
    ``QemuStartError``...).
    """
    # a clone's template, before anything is made (a running clone needs it no more)
    _templates.check(lab, running=lambda name: _machine_present({"name": name}))
    with locked("lab", lab.name, timeout=timeout):
        rec = labrec.load(lab.name)
        if rec is not None and Path(rec.file) != lab.path.resolve():
            raise StateError(f"lab {lab.name!r} is up from {rec.file}, not {lab.path}")
        if rec is None:
            rec = LabRecord(lab.name, str(lab.path.resolve()), lab.digest)
            labrec.save(rec)
        elif rec.digest != lab.digest:
            log.warning("lab %s: %s changed since it was brought up; only missing objects "
                        "are made (down and up again to apply changes)", lab.name, lab.path)
        made: list[tuple[str, str]] = []
        kept: list[str] = []
        try:
            for host in lab.hosts:
                _ensure(rec, "host", host.name, functools.partial(_objects.make_host, rec, host),
                        _host_present, made, kept, step)
            for sw in lab.switches:
                _ensure(rec, "switch", sw.name, functools.partial(_objects.make_switch, rec, sw),
                        _objects.switch_present, made, kept, step)
            for router in lab.routers:
                _ensure(rec, "router", router.name,
                        functools.partial(_objects.make_router, rec, lab, router), _router_present,
                        made, kept, step)
            started = []
            for m in lab.machines:
                if _ensure(rec, "machine", m.name, functools.partial(_make_machine, rec, lab, m),
                           _machine_present, made, kept, step):
                    started.append(m.name)
            if wait_ready:
                for name in started:
                    with step(f"waiting for {name} (its shell or guest agent)"):
                        machine = attach(name, timeout=timeout)
                        try:
                            machine.wait_ready(timeout)
                        finally:
                            detach(machine)
        except BaseException:
            failures = []
            for kind, name in reversed(made):
                item = rec.find(kind, name)
                if item is None:
                    continue
                try:
                    _remove(item, lab=lab.name)
                    rec.drop(kind, name)
                except VmanagerError as exc:
                    failures.append(f"{kind} {name}: {exc}")
            if not rec.made:
                labrec.delete(lab.name)
            if failures:
                log.error("lab %s: rollback left things behind:\n%s", lab.name,
                          "\n".join(failures))
            raise
        return UpResult(lab.name, tuple(f"{k} {n}" for k, n in made), tuple(kept))


def _ensure(rec: LabRecord, kind: str, name: str, make: Callable[[], None],
            present: Callable[[dict[str, Any]], bool], made: list[tuple[str, str]],
            kept: list[str], step: Step) -> bool:
    item = rec.find(kind, name)
    if item is not None and present(item):
        kept.append(f"{kind} {name}")
        return False
    with step(f"{kind} {name}"):
        if item is not None:  # recorded but (partly) gone: clear the rest first
            _remove(item, lab=rec.name)
            rec.drop(kind, name)
        made.append((kind, name))
        with _signals.deferred():  # a SIGTERM waits until what is made is recorded
            make()
    return True


def _host_present(item: dict[str, Any]) -> bool:
    return _net.namespace_exists(item["name"]) and _net.link_exists(item["port"])


def _router_present(item: dict[str, Any]) -> bool:
    if not _net.link_exists(item["lan_port"]):
        return False
    ident = item.get("dnsmasq")
    return ident is None or _objects.identity(ident).check() is Liveness.RUNNING


def _machine_present(item: dict[str, Any]) -> bool:
    rec = records.find(item["name"])
    return rec is not None and records.liveness(rec) is Liveness.RUNNING


def _make_machine(rec: LabRecord, lab: Lab, spec: MachineSpec) -> None:
    existing = records.find(spec.name)
    if existing is not None and existing.lab != lab.name:
        raise ConfigError(f"{lab.path}: machine {spec.name!r} already exists outside lab "
                          f"{lab.name!r}")
    with locked("machine", spec.name):
        records.save(MachineRecord(spec.name, definition=spec.definition(), persistent=True,
                                   lab=lab.name,
                                   runtime=existing.runtime if existing else None))
    rec.put({"kind": "machine", "name": spec.name, "netns": spec.name if spec.nics else None})
    machine = start_lab_machine(records.load(spec.name))
    detach(machine)


def start_lab_machine(record: MachineRecord, *, incoming: bool = False) -> PersistentMachine:
    """Start a lab machine from its record: namespace, NICs on their switches, QEMU.

    ``incoming``: QEMU waits for a migration (``-incoming defer``) instead of booting.
    The caller detaches (or stops) the returned machine. On failure nothing
    this call made is left.
    """
    from vmanager.net import Namespace, VirtualNic, stable_mac
    if record.lab is None:
        raise StateError(f"machine {record.name!r} is not part of a lab")
    rec = labrec.load(record.lab)
    if rec is None:
        raise NotFoundError(f"lab {record.lab!r} of machine {record.name!r} is not up")
    nic_specs = list(record.definition.get("nics") or [])
    made: list[Any] = []
    machine: PersistentMachine | None = None
    try:
        if nic_specs:
            # left from a previous run of ours: removed; anybody else's: refused
            if _owner.require_ours(record.lab, netns=record.name):
                _net.remove_namespace(record.name)  # left from a previous run of ours
            made.append(Namespace(record.name))
            _owner.mark_namespace(record.lab, record.name)
        nics = []
        for index, n in enumerate(nic_specs):
            nic = VirtualNic(namespace=record.name, mac=n.get("mac") or
                             stable_mac(record.name, index), mode=n.get("mode", "macvtap"),
                             model=n.get("model", "virtio-net-pci"), mtu=n.get("mtu"),
                             create=False)
            # The kernel tears a removed namespace down asynchronously: the host end
            # of the previous run's veth can still be there for a moment.
            if _owner.require_ours(record.lab, link=nic.port):
                _net.remove_link(nic.port)
            nic.create()
            _owner.mark_link(record.lab, nic.port)
            made.append(nic)
            nics.append(nic)
            if n.get("impair"):
                impair.apply(nic.sink, nic.namespace, Impairment(**n["impair"]))
            if n.get("switch"):
                vlans = n.get("vlans") or None
                _objects.connect(rec, n["switch"], nic.port, vlan=n.get("vlan"), vlans=vlans)
        kwargs = machine_kwargs(record.name, record.definition)
        machine = PersistentMachine(record.name, nics=nics, **kwargs)
        machine.migration.incoming = incoming  # a migration destination (lab.migrate_ends)
        machine.start_vm()
    except BaseException:
        if machine is not None:
            machine.kill()
        for obj in reversed(made):
            with contextlib.suppress(VmanagerError):
                obj.close()
        raise
    for obj in made:
        _net.forget(obj)
    return machine


# -- down -------------------------------------------------------------------------------

def down(name: str, *, step: Step = _no_progress, timeout: float = 60.0,
         graceful: bool = False) -> list[str]:
    """Remove everything lab ``name`` made; returns what was removed.

    Machines are stopped forcefully (:meth:`~vmanager.Machine.stop`: QMP ``quit``,
    then SIGKILL). With ``graceful`` each is first asked to power off
    (:meth:`~vmanager.Machine.shutdown`, up to ``timeout`` s) and stopped by
    force only if it does not.

    Nothing to do (the lab is not up) is not an error. Raises
    :class:`NetworkError` listing every removal that failed, after trying all.
    """
    removed: list[str] = []
    with locked("lab", name, timeout=timeout):
        from vmanager.lab import tools
        for target in tools.stop_captures(name):
            log.info("lab %s: stopped the capture on %s", name, target)
        rec = labrec.load(name)
        if rec is None:
            return removed
        failures = []
        order = {"machine": 0, "router": 1, "switch": 2, "host": 3}
        done: list[dict[str, Any]] = []
        try:
            # namespaces and links are removed together when the block ends: one
            # kernel clean-up pass for the lab instead of one wait per link
            with batch_removal(timeout=timeout):
                for item in sorted(reversed(rec.made), key=lambda i: order.get(i["kind"], 9)):
                    label = f"{item['kind']} {item['name']}"
                    try:
                        with step(f"removing {label}"):
                            _remove(item, lab=name, timeout=timeout, graceful=graceful)
                        done.append(item)
                        removed.append(label)
                    except VmanagerError as exc:
                        failures.append(f"{label}: {exc}")
        except NetworkError as exc:
            failures.append(str(exc))
            done = []  # which one failed is unknown: keep all in the record for a retry
        for item in done:
            rec.drop(item["kind"], item["name"])
        if failures:
            raise NetworkError(f"lab {name!r}: could not remove everything:\n"
                               + "\n".join(failures))
        labrec.delete(name)
        from vmanager.lab import checkpoint
        checkpoint.forget_all(name)
    return removed


def _remove(item: dict[str, Any], *, lab: str, timeout: float = 30.0,
            graceful: bool = False) -> None:
    """Remove a recorded object; a namespace or link not marked as ``lab``'s is refused.

    A ``pending`` item was recorded before it was made: what of it exists without
    the lab's marker was never made by the lab (a name clash) and is left alone.
    """
    kind = item["kind"]
    pending = bool(item.get("pending"))

    def ours(**what: str) -> bool:
        try:
            return _owner.require_ours(lab, **what)
        except ConfigError:
            if pending:
                return False
            raise

    if kind == "machine":
        if item.get("netns"):
            ours(netns=item["netns"])  # before anything is stopped
        _remove_machine(item, timeout, graceful=graceful)
    elif kind == "router":
        ident = _objects.identity(item["dnsmasq"]) if item.get("dnsmasq") else None
        if pending and item.get("run_dir"):
            ident = _objects.dnsmasq_of(Path(item["run_dir"]))
        ns = item.get("namespace")
        ns_mine = ours(netns=ns) if ns else False
        port_mine = ours(link=item["lan_port"])
        if ident is not None and (ns_mine or not pending):
            _stop_process(ident)
        if ns and ns_mine:
            _net.remove_namespace(ns)
        if port_mine:
            _net.remove_link(item["lan_port"])
        if item.get("mode") == "bridged" and ours(link=item["name"]):
            _net.remove_link(item["name"])
        if item.get("run_dir") and (ns_mine or not pending):  # a clash's dir is not ours
            run_dir = Path(item["run_dir"])
            if run_dir.parent == paths.run_dir() / "net":
                logkeeper.wait_gone(run_dir / "dnsmasq.log")  # dnsmasq is gone: it ends
                shutil.rmtree(run_dir, ignore_errors=True)
    elif kind == "switch":
        if ours(link=item["name"]):
            _objects.remove_switch(item, lab)
    elif kind == "host":
        if ours(netns=item["name"]):
            _net.remove_namespace(item["name"])
        if ours(link=item["port"]):
            _net.remove_link(item["port"])


def _remove_machine(item: dict[str, Any], timeout: float, *, graceful: bool) -> None:
    name = item["name"]
    rec = records.find(name)
    if rec is not None:
        state = records.liveness(rec)
        if state is Liveness.RUNNING:
            machine = attach(name, timeout=timeout)
            if graceful:
                try:
                    machine.shutdown(timeout=timeout)
                except ShutdownTimeout as exc:
                    log.warning("%s; stopping it by force", exc)
            machine.stop()
        elif state is not None:
            log.warning("machine %s: stale record (%s); not signalling anything", name,
                        records.status(rec).detail)
            records.clear_stale(name)
    if item.get("netns"):
        _net.remove_namespace(item["netns"])
    with locked("machine", name):
        rec = records.find(name)
        if rec is not None and records.liveness(rec) is None:
            records.delete(name)
            remove_image_overlay(name, rec.definition)
            remove_state_disk(name)  # its snapshots (lab checkpoints) go with it


def _stop_process(ident: ProcessIdentity) -> None:
    if ident.check() is not Liveness.RUNNING:
        return
    try:
        proc = AdoptedProcess(ident)
    except VmanagerError:
        return
    proc.terminate()
    try:
        proc.wait(5.0)
    except Exception:
        proc.kill()
        proc.wait(5.0)
    finally:
        proc.close()
