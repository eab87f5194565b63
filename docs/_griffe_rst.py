"""A griffe extension: vmanager's docstrings use a little reST; render it as Markdown.

- roles (``:class:`~vmanager.Harddrive``` and friends) become inline code;
- ``Example::`` literal blocks become fenced Python blocks;
- doctest lines (``>>> ...``) become ``pycon`` blocks instead of block quotes.

Only what the docs site shows changes; the source docstrings stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        indent = line[:len(line) - len(stripped)]
        if stripped.startswith(">>>"):
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith("```"):
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        if stripped.endswith("::") and not stripped.startswith((":", "```")):
            head = line[:-2] + (":" if not line[:-2].rstrip().endswith(":") else "")
            out.append(head.rstrip() if head.strip() != ":" else "")
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            width = min(len(b) - len(b.lstrip()) for b in body if b.strip()) if body else 0
            out.append("")
            out.append(f"{indent}```python")
            out.extend(indent + b[width:] if b.strip() else "" for b in body)
            out.append(f"{indent}```")
            out.append("")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite each loaded object's docstring for the site."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _blocks(_ROLE.sub(_role, obj.docstring.value))
