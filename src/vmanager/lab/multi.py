"""Labs across servers: the orchestrating host sends each server its part.

``up`` checks every server first (reachable, same vmanager version), then runs
``vmanager --json up - --server NAME`` on each with the lab file on stdin, so
the file on this host stays the one description and every server parses it
with the same code; each server keeps its own records of what it made. The
local part (objects with no ``server``) is made here, last. Which server holds
what is written to this host's lab record before each server is asked, so a
crash midway leaves a record that ``down`` works from.

A failure anywhere takes down again, on every server, what this call made
there (a server that already had its part up before is left as it was), then
re-raises: a server that cannot be reached is named in the error.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, NetworkError, StateError, VmanagerError
from vmanager.lab import record as labrec
from vmanager.lab import runner, servers, status
from vmanager.lab.record import LabRecord
from vmanager.lab.remote import Remote
from vmanager.lab.runner import Step, UpResult, _no_progress
from vmanager.lab.servers import ServerSpec
from vmanager.lab.spec import Lab
from vmanager.state.lock import locked

log = logging.getLogger(__name__)


def _remote_servers(lab: Lab) -> list[ServerSpec]:
    by_name = {s.name: s for s in lab.servers}
    return [by_name[p] for p in servers.servers_used(lab) if p is not None]


def _has_local(lab: Lab) -> bool:
    local = servers.part(lab, None)
    return bool(local.machines or local.routers or local.hosts or local.switches)


def placement(lab: Lab) -> dict[str, str | None]:
    """Where each machine runs: the lab file's ``server``, unless a migration moved it
    (this host's lab record says so)."""
    placed = {m.name: m.server for m in lab.machines}
    rec = labrec.load(lab.name)
    for item in rec.made if rec is not None else []:
        if item["kind"] == "server":
            for name in item.get("machines", []):
                if name in placed:
                    placed[name] = item["name"]
    return placed


def effective(lab: Lab) -> tuple[Lab, list[str]]:
    """``lab`` with machines where they run now, and the ``--place`` arguments saying so."""
    placed = placement(lab)
    args: list[str] = []
    for m in lab.machines:
        if placed[m.name] != m.server:
            args += ["--place", f"{m.name}={placed[m.name] or 'local'}"]
    machines = tuple(replace(m, server=placed[m.name]) for m in lab.machines)
    return replace(lab, machines=machines), args


def apply_place(lab: Lab, place: list[str]) -> Lab:
    """``lab`` with ``MACHINE=SERVER`` overrides (what ``--place`` passes to a server)."""
    where: dict[str, str | None] = {}
    names = {s.name for s in lab.servers}
    for item in place:
        machine, sep, server = item.partition("=")
        if not sep or server not in names | {"local"}:
            raise ConfigError(f"--place {item!r}: expected MACHINE=SERVER with a server of "
                              f"the lab ({', '.join(sorted(names))})")
        where[machine] = None if server == "local" else server
    unknown = set(where) - {m.name for m in lab.machines}
    if unknown:
        raise ConfigError(f"--place: no machine {', '.join(sorted(unknown))} in the lab")
    machines = tuple(replace(m, server=where.get(m.name, m.server)) for m in lab.machines)
    placed = replace(lab, machines=machines)
    servers.check_placement(placed)
    return placed


def up(lab: Lab, *, step: Step = _no_progress, wait_ready: bool = False,
       timeout: float = 300.0) -> UpResult:
    """Bring ``lab`` up on every server it uses, then the local part.

    Raises:
        ServerUnreachable: a server cannot be reached (named); nothing is left.
        HostError: a server runs another vmanager version.
        RemoteError: a server's ``up`` failed (its own message, prefixed).
    """
    lab, place = effective(lab)
    targets = _remote_servers(lab)
    remotes = {s.name: Remote(s) for s in targets}
    for s in targets:
        with step(f"server {s.name}: checking {s.destination}"):
            remotes[s.name].check_version()
    made: list[str] = []
    kept: list[str] = []
    fresh: list[str] = []  # servers where this call brought the lab part up
    try:
        for s in targets:
            _note_server(lab, s)
            args = ["up", "-", "--server", s.name, "--timeout", str(timeout), *place]
            if wait_ready:
                args.append("--wait-ready")
            with step(f"server {s.name}: lab part"):
                result = remotes[s.name].call(args, input=lab.source, timeout=timeout + 60)
            made += [f"{s.name}: {m}" for m in result.get("made", [])]
            kept += [f"{s.name}: {k}" for k in result.get("kept", [])]
            if not result.get("kept"):
                fresh.append(s.name)
        if _has_local(lab):
            local = runner.up(servers.part(lab, None), step=step, wait_ready=wait_ready,
                              timeout=timeout)
            made += list(local.made)
            kept += list(local.kept)
    except BaseException:
        failures = []
        for name in reversed(fresh):
            try:
                remotes[name].call(["down", lab.name, "--timeout", str(timeout)],
                                   timeout=timeout + 60)
                _forget_server(lab.name, name)
            except VmanagerError as exc:
                failures.append(f"server {name}: {exc}")
        for s in targets:  # a server that failed rolled its own part back
            if s.name not in fresh and not any(k.startswith(f"{s.name}: ") for k in kept):
                _forget_server(lab.name, s.name)
        if failures:
            log.error("lab %s: rollback left things behind:\n%s", lab.name,
                      "\n".join(failures))
        raise
    return UpResult(lab.name, tuple(made), tuple(kept))


def _note_server(lab: Lab, server: ServerSpec) -> None:
    with locked("lab", lab.name):
        rec = labrec.load(lab.name)
        if rec is not None and Path(rec.file) != lab.path.resolve():
            raise StateError(f"lab {lab.name!r} is up from {rec.file}, not {lab.path}")
        if rec is None:
            rec = LabRecord(lab.name, str(lab.path.resolve()), lab.digest)
        machines = [m.name for m in lab.machines if m.server == server.name]
        rec.put({"kind": "server", "name": server.name, "server": server.to_json(),
                 "machines": machines})


def _forget_server(lab_name: str, server: str) -> None:
    with locked("lab", lab_name):
        rec = labrec.load(lab_name)
        if rec is None:
            return
        rec.drop("server", server)
        if not rec.made:
            labrec.delete(lab_name)


def down(name: str, *, step: Step = _no_progress, timeout: float = 60.0,
         graceful: bool = False) -> list[str]:
    """Take lab ``name`` down on every server its record names, then here.

    Every server is tried even when one fails; the record of a server that
    failed stays, so ``down`` can be run again.

    Raises:
        NetworkError: listing each server (or local object) that could not be removed.
    """
    rec = labrec.load(name)
    if rec is None:
        return []
    removed: list[str] = []
    failures: list[str] = []
    for item in [i for i in rec.made if i["kind"] == "server"]:
        server = ServerSpec.from_json(item["server"])
        try:
            with step(f"server {server.name}: taking the lab part down"):
                out = Remote(server).call(["down", name, "--timeout", str(timeout),
                                           *(["--graceful"] if graceful else [])],
                                          timeout=timeout + 60)
            removed += [f"{server.name}: {r}" for r in (out or {}).get("removed", [])]
            _forget_server(name, server.name)
        except VmanagerError as exc:
            failures.append(f"server {server.name}: {exc}")
    if failures:
        raise NetworkError(f"lab {name!r}: could not take down everything:\n"
                           + "\n".join(failures))
    removed += runner.down(name, step=step, timeout=timeout, graceful=graceful)
    return removed


def inspect(lab: Lab) -> dict[str, Any]:
    """:func:`vmanager.lab.inspect` over every server: each item names its server."""
    lab, place = effective(lab)
    info = status.inspect(servers.part(lab, None))
    for key in ("machines", "routers", "switches", "hosts"):
        for item in info[key]:
            item["server"] = None
    for s in _remote_servers(lab):
        part = Remote(s).call(["inspect", "-", "--server", s.name, *place], input=lab.source,
                              timeout=120)
        info["up"] = info["up"] or part["up"]
        for key in ("machines", "routers", "switches", "hosts"):
            for item in part[key]:
                item["server"] = s.name
                info[key].append(item)
    info["servers"] = [{"name": s.name, "ssh": s.destination, "address": s.address}
                       for s in lab.servers]
    return info


def server_of(machine: str) -> ServerSpec | None:
    """The server that runs lab machine ``machine`` according to this host's lab records."""
    for rec in labrec.all_records():
        for item in rec.made:
            if item["kind"] == "server" and machine in item.get("machines", []):
                return ServerSpec.from_json(item["server"])
    return None


def move_machine(lab_name: str, machine: str, to: ServerSpec) -> None:
    """Record that ``machine`` now runs on ``to`` (after a migration)."""
    with locked("lab", lab_name):
        rec = labrec.load(lab_name)
        if rec is None:
            raise StateError(f"lab {lab_name!r} is not up")
        for item in rec.made:
            if item["kind"] == "server" and machine in item.get("machines", []):
                item["machines"].remove(machine)
        target = rec.find("server", to.name)
        if target is None:
            target = {"kind": "server", "name": to.name, "server": to.to_json(),
                      "machines": []}
        target["machines"].append(machine)
        rec.put(target)
