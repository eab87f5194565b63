"""Pictures of a lab's topology: SVG laid out by Graphviz, or drawn here, and Mermaid text.

:func:`svg` lays the lab out with Graphviz's ``dot`` (through the ``graphviz``
package, ``pip install vmanager[graph]`` and the ``graphviz`` system package)
when both are installed, which keeps larger labs readable; otherwise it draws
the rows of hosts, routers, switches and machines itself. Edges carry their
VLANs, impairments, MTUs and, for a lab that is up, the captures running on them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from html import escape
from typing import Any, Literal

from vmanager.errors import HostError
from vmanager.lab.spec import Lab

log = logging.getLogger(__name__)
Engine = Literal["auto", "graphviz", "builtin"]

_COLORS = {"host": "#f2d7d5", "router": "#fdebd0", "switch": "#d6eaf8", "machine": "#d5f5e3"}
_W, _H, _GAP_X, _GAP_Y = 150, 46, 30, 70


def edges(lab: Lab, captures: Mapping[str, object] | None = None
          ) -> list[tuple[str, str, str]]:
    """``(from, to, label)`` for every connection in the lab.

    ``captures`` (targets such as ``"web:0"`` or a router's name, see
    :func:`vmanager.lab.tools.active_captures`) mark the edges being captured.
    """
    captures = captures or {}
    out = []
    for r in lab.routers:
        if r.trunk in {h.name for h in lab.hosts}:
            out.append((r.trunk, r.name, "trunk"))
        if r.switch:
            out.append((r.name, r.switch, "lan" + (" [capturing]" if r.name in captures
                                                   else "")))
    for m in lab.machines:
        for i, n in enumerate(m.nics):
            if n.switch:
                parts = [f"nic{i}"]
                if n.vlan:
                    parts.append(f"vlan {n.vlan}")
                if n.vlans:
                    parts.append("vlans " + ",".join(str(v) for v in n.vlans))
                if n.impair:
                    parts.append(n.impair.describe())
                if n.mtu:
                    parts.append(f"mtu {n.mtu}")
                if f"{m.name}:{i}" in captures:
                    parts.append("[capturing]")
                out.append((n.switch, m.name, " ".join(parts)))
    return out


def _layers(lab: Lab) -> list[list[tuple[str, str, str]]]:
    return [
        [(h.name, "host", h.address or h.port) for h in lab.hosts],
        [(r.name, "router", f"{r.mode} {r.subnet or ''}".strip()) for r in lab.routers],
        [(s.name, "switch", "vlan-aware" if s.vlan_filtering else "switch")
         for s in lab.switches],
        [(m.name, "machine", f"{m.memory} MiB, {m.cpus} cpu") for m in lab.machines],
    ]


def svg(lab: Lab, *, engine: Engine = "auto",
        captures: Mapping[str, object] | None = None) -> str:
    """An SVG picture of the lab: laid out by Graphviz, or drawn in rows here.

    ``engine="auto"`` uses Graphviz when the ``graphviz`` package and its ``dot``
    program are installed and the built-in drawing otherwise; ``"graphviz"``
    insists (:class:`HostError` when missing), ``"builtin"`` never uses it.
    """
    if engine != "builtin":
        try:
            graph = _graphviz(lab, captures)
            if shutil.which("dot") is None:
                raise HostError("Graphviz layout needs Graphviz's 'dot' program (apt-get "
                                "install graphviz)")
            return str(graph.pipe(format="svg").decode())
        except HostError:
            if engine == "graphviz":
                raise
            log.debug("graphviz is not available; drawing the lab in rows")
    return _svg_builtin(lab, captures)


def dot(lab: Lab, *, captures: Mapping[str, object] | None = None) -> str:
    """The lab as Graphviz DOT source (needs the ``graphviz`` package)."""
    return str(_graphviz(lab, captures).source)


_SHAPES = {"host": "ellipse", "router": "hexagon", "switch": "box", "machine": "box"}


def _graphviz(lab: Lab, captures: Mapping[str, object] | None) -> Any:
    try:
        import graphviz
    except ImportError as exc:
        raise HostError("Graphviz layout needs the 'graphviz' Python package (pip install "
                        "'vmanager[graph]') and Graphviz itself (apt-get install "
                        "graphviz)") from exc
    g = graphviz.Graph(f"lab {lab.name}", graph_attr={
        "label": f"lab {lab.name}", "labelloc": "t", "fontname": "sans-serif",
        "rankdir": "TB", "nodesep": "0.4", "ranksep": "0.8"},
        node_attr={"fontname": "sans-serif", "style": "filled,rounded", "fontsize": "12"},
        edge_attr={"fontname": "sans-serif", "fontsize": "10", "color": "#333333"})
    for layer in _layers(lab):
        for name, kind, sub in layer:
            g.node(_mid(name), f"{name}\n{kind}: {sub}", shape=_SHAPES[kind],
                   fillcolor=_COLORS[kind])
    for a, b, label in edges(lab, captures):
        style = {"color": "#c0392b", "penwidth": "2"} if "[capturing]" in label else {}
        g.edge(_mid(a), _mid(b), label=label, **style)
    return g


def _svg_builtin(lab: Lab, captures: Mapping[str, object] | None) -> str:
    """Hosts, routers, switches and machines in rows, joined by their links."""
    layers = [layer for layer in _layers(lab) if layer]
    width = max([len(layer) for layer in layers] + [1]) * (_W + _GAP_X) + _GAP_X
    height = len(layers) * (_H + _GAP_Y) + _GAP_Y
    pos: dict[str, tuple[float, float]] = {}
    boxes = []
    for row, layer in enumerate(layers):
        y = _GAP_Y / 2 + 20 + row * (_H + _GAP_Y)
        span = len(layer) * (_W + _GAP_X) - _GAP_X
        x0 = (width - span) / 2
        for col, (name, kind, sub) in enumerate(layer):
            x = x0 + col * (_W + _GAP_X)
            pos[name] = (x + _W / 2, y)
            boxes.append(
                f'<g class="{kind}"><rect x="{x:.0f}" y="{y:.0f}" width="{_W}" height="{_H}" '
                f'rx="8" fill="{_COLORS[kind]}" stroke="#555"/>'
                f'<text x="{x + _W / 2:.0f}" y="{y + 19:.0f}" font-weight="bold">'
                f'{escape(name)}</text><text x="{x + _W / 2:.0f}" y="{y + 36:.0f}" '
                f'font-size="11">{escape(kind)}: {escape(sub)}</text></g>')
    lines = []
    for a, b, label in edges(lab, captures):
        if a in pos and b in pos:
            (ax, ay), (bx, by) = pos[a], pos[b]
            y1, y2 = (ay + _H, by) if ay < by else (ay, by + _H)
            lines.append(f'<line x1="{ax:.0f}" y1="{y1:.0f}" x2="{bx:.0f}" y2="{y2:.0f}" '
                         f'stroke="#333" stroke-width="1.5"/><text x="{(ax + bx) / 2:.0f}" '
                         f'y="{(y1 + y2) / 2:.0f}" font-size="10" fill="#333">'
                         f'{escape(label)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height + 10:.0f}" font-family="sans-serif" font-size="13" '
            f'text-anchor="middle">\n<title>lab {escape(lab.name)}</title>\n'
            f'<text x="{width / 2:.0f}" y="20" font-size="15">lab {escape(lab.name)}</text>\n'
            + "\n".join(lines + boxes) + "\n</svg>\n")


def mermaid(lab: Lab) -> str:
    """The topology as a Mermaid flowchart."""
    out = ["flowchart TD"]
    shapes = {"host": ("((", "))"), "router": ("{{", "}}"), "switch": ("[/", "/]"),
              "machine": ("[", "]")}
    for layer in _layers(lab):
        for name, kind, sub in layer:
            left, right = shapes[kind]
            out.append(f'    {_mid(name)}{left}"{name}<br/>{kind}: {sub}"{right}')
    for a, b, label in edges(lab):
        out.append(f"    {_mid(a)} ---|{label}| {_mid(b)}")
    return "\n".join(out) + "\n"


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)
