"""Lab and network commands: up, down, inspect, graph, net."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vmanager.cli._output import Progress, emit_json, table


def cmd_up(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    from vmanager.cli.remote import read_lab
    from vmanager.lab import multi
    lab = read_lab(args.file, args.server, args.place)
    progress = Progress(quiet=args.json or args.quiet)
    up = multi.up if lab.servers and args.server is None else labs.up
    result = up(lab, step=progress.step, wait_ready=args.wait_ready, timeout=args.timeout)
    if args.json:
        emit_json({"lab": result.lab, "made": list(result.made), "kept": list(result.kept)})
    elif not args.quiet:
        print(f"lab {lab.name}: made {len(result.made)}, already there {len(result.kept)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    from vmanager.lab import multi
    name = args.file
    if Path(args.file).is_file():
        name = labs.load(args.file).name
    progress = Progress(quiet=args.json or args.quiet)
    removed = multi.down(name, step=progress.step, timeout=args.timeout,
                         graceful=args.graceful)
    if args.json:
        emit_json({"lab": name, "removed": removed})
    elif not args.quiet:
        print(f"lab {name}: removed {len(removed)}" if removed else f"lab {name} is not up")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    from vmanager.cli.remote import read_lab
    from vmanager.lab import multi
    lab = read_lab(args.file, args.server, args.place)
    info = multi.inspect(lab) if lab.servers and args.server is None else labs.inspect(lab)
    if args.json:
        emit_json(info)
        return 0
    print(f"lab {info['lab']} ({info['file']}): {'up' if info['up'] else 'down'}"
          + (" - the file changed since 'up'" if info["changed"] else ""))
    rows: list[list[Any]] = []
    for m in info["machines"]:
        addrs = ", ".join(f"{n['switch'] or '-'}:{n['address'] or n['mac']}" for n in m["nics"])
        rows.append(["machine", m["name"], m["state"], addrs or "-"])
    for r in info["routers"]:
        rows.append(["router", r["name"], r["state"], f"{r['mode']} {r['address'] or ''}"])
    for s in info["switches"]:
        rows.append(["switch", s["name"], s["state"],
                     "vlan-aware" if s["vlan_filtering"] else ""])
    for h in info["hosts"]:
        rows.append(["host", h["name"], h["state"], h["address"] or ""])
    table(["kind", "name", "state", "details"], rows)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from vmanager import lab as labs
    lab = labs.load(args.file)
    if args.mermaid:
        text = labs.mermaid(lab)
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text, end="")
        return 0
    from vmanager.lab import record as labrec
    from vmanager.lab import tools
    captures = tools.active_captures(lab.name) if labrec.load(lab.name) else {}
    if args.dot:
        text = labs.dot(lab, captures=captures)
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text, end="")
        return 0
    out = Path(args.output or f"{lab.name}.svg")
    out.write_text(labs.svg(lab, engine=args.engine, captures=captures))
    if not args.quiet:
        print(f"wrote {out}")
    return 0


def cmd_net(args: argparse.Namespace) -> int:
    from vmanager.lab import record as labrec
    from vmanager.net import adopt as _net
    rows = []
    for rec in labrec.all_records():
        for item in rec.made:
            kind, name = item["kind"], item["name"]
            if kind == "switch":
                present = _net.link_exists(name)
                detail = "vlan-aware" if item.get("vlan_filtering") else ""
            elif kind == "router":
                present = _net.link_exists(item["lan_port"])
                detail = f"{item['mode']} lan port {item['lan_port']}" + (
                    f" {item['address']}" if item.get("address") else "")
            elif kind == "host":
                present = _net.namespace_exists(name)
                detail = f"namespace, port {item['port']}"
            else:
                present = item.get("netns") is None or _net.namespace_exists(item["netns"])
                detail = f"namespace {item['netns']}" if item.get("netns") else ""
                kind = "machine-ns"
            rows.append({"lab": rec.name, "kind": kind, "name": name,
                         "state": "present" if present else "missing", "detail": detail})
    if args.json:
        emit_json(rows)
    elif rows:
        table(["lab", "kind", "name", "state", "detail"],
              [[r["lab"], r["kind"], r["name"], r["state"], r["detail"]] for r in rows])
    else:
        print("no lab networks")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the lab and network commands."""
    def add(name: str, func: Any, text: str, timeout: float) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text,
                                                    parents=[common])
        p.set_defaults(func=func)
        p.add_argument("--timeout", type=float, default=timeout, metavar="S",
                       help=f"seconds to wait (default {timeout:g})")
        return p

    p = add("up", cmd_up, "bring a lab up (idempotent; a failure rolls back what it made)",
            300.0)
    p.add_argument("file", help="the lab's TOML file ('-': standard input)")
    p.add_argument("--server", metavar="NAME", help="make only the part of the lab placed "
                   "on server NAME (what a lab's orchestrating host asks each server)")
    p.add_argument("--place", action="append", default=[], metavar="MACHINE=SERVER",
                   help="the machine runs on SERVER now (after a migration)")
    p.add_argument("--wait-ready", action="store_true",
                   help="wait until every started machine's backdoor shell or guest agent "
                   "answers")
    p = add("down", cmd_down, "remove everything a lab made (machines are stopped by "
            "force: QMP quit, then SIGKILL)", 60.0)
    p.add_argument("file", help="the lab's TOML file, or its name")
    p.add_argument("--graceful", action="store_true",
                   help="ask each machine to power off first (ACPI, up to --timeout "
                        "seconds); force only those that do not")
    p = add("inspect", cmd_inspect, "show a lab's machines, addresses and state", 10.0)
    p.add_argument("file", help="the lab's TOML file ('-': standard input)")
    p.add_argument("--server", metavar="NAME", help="only the part on server NAME")
    p.add_argument("--place", action="append", default=[], metavar="MACHINE=SERVER",
                   help="the machine runs on SERVER now (after a migration)")
    p = add("graph", cmd_graph, "draw a lab's topology (SVG, or Mermaid text)", 10.0)
    p.add_argument("file")
    p.add_argument("-o", "--output", help="where to write (default LAB.svg; Mermaid: stdout)")
    p.add_argument("--mermaid", action="store_true", help="Mermaid flowchart text")
    p.add_argument("--dot", action="store_true", help="Graphviz DOT text")
    p.add_argument("--engine", choices=("auto", "graphviz", "builtin"), default="auto",
                   help="SVG layout: Graphviz when installed (auto), or the built-in rows")
    add("net", cmd_net, "list the switches, routers and namespaces labs made", 10.0)
