"""The documentation site: every Python example on its pages runs, and it builds strictly.

Each fenced ```` ```python ```` block of ``docs/*.md`` is one test, run for real in this
process (some boot tiny guests, some build switches and routers), so the autouse leak check
of ``tests/conftest.py`` holds every example to cleaning up after itself. A block preceded by
the line ``<!-- no-run -->`` is illustrative only (it needs an OS image, an outside network
or another host) and is skipped; every such marker must sit right before a Python block.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Example:
    """One fenced Python block of a page."""

    page: str
    line: int       # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def examples(docs: Path = DOCS) -> list[Example]:
    """Every ```python block of every page, in page order."""
    found = []
    for page in sorted(docs.glob("*.md")):
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = _FENCE.match(lines[i])
            if fence is None:
                i += 1
                continue
            start, lang = i, fence.group(1)
            i += 1
            body = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            i += 1
            if lang != "python":
                continue
            before = next((lines[j].strip() for j in range(start - 1, -1, -1)
                           if lines[j].strip()), "")
            found.append(Example(page.name, start + 1, "\n".join(body) + "\n",
                                 run=before != NO_RUN))
    return found


ALL = examples()
RUNNABLE = [e for e in ALL if e.run]


def test_the_pages_have_runnable_examples() -> None:
    assert len(RUNNABLE) >= 5, [e.id for e in ALL]


def test_every_no_run_marker_precedes_a_python_block() -> None:
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text().splitlines()
        for n, text in enumerate(lines):
            if text.strip() != NO_RUN:
                continue
            following = next((t for t in lines[n + 1:] if t.strip()), "")
            assert following.strip() == "```python", (
                f"{page.name}:{n + 1}: {NO_RUN} must come right before a ```python block")


def test_every_example_compiles() -> None:
    for example in ALL:
        compile(example.code, f"docs/{example.id}", "exec")


@pytest.mark.guest
@pytest.mark.net
@pytest.mark.parametrize("example", RUNNABLE, ids=[e.id for e in RUNNABLE])
def test_example_runs(example: Example, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("the examples build namespaces, links and guests: they need root")
    # Examples that write files do it in the current directory or a temp dir.
    monkeypatch.chdir(tmp_path)
    code = compile(example.code, f"docs/{example.id}", "exec")
    exec(code, {"__name__": f"docs_example_{example.page[:-3]}"})


def test_lab_files_on_the_pages_validate() -> None:
    from vmanager.lab import parse
    blocks = 0
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"^```toml\n(.*?)^```$", page.read_text(), re.M | re.S):
            if "[lab]" in block:
                parse(block, path=f"docs/{page.name}")
                blocks += 1
    assert blocks >= 1


def test_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or \
            importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("mkdocs/mkdocstrings are not installed: pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
