"""Fixtures for the networking tests: real kernel objects in throwaway namespaces.

Every test runs under :func:`no_net_leaks` (and the suite-wide check of
tests/conftest.py), which fails it when a namespace, a host link, a child
process or a device node made during the test is still there afterwards
(and removes the leftovers so the next test starts clean).
Traffic only ever goes to loopback and to namespaces the tests create.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from vmanager.net import Namespace, sys_command

if os.geteuid() != 0:
    pytest.skip("the networking tests need root (netlink, namespaces)", allow_module_level=True)

_RUN_DIR = Path(tempfile.mkdtemp(prefix="vmanager-net-test-"))
os.environ["VMANAGER_RUN_DIR"] = str(_RUN_DIR)

pytestmark = pytest.mark.net

_counter = itertools.count()
_TAG = f"{os.getpid() % 1000:03d}"


def _links() -> set[str]:
    with IPRoute() as ipr:
        return {str(m.get_attr("IFLA_IFNAME")) for m in ipr.link("dump")}


def _nft_tables() -> set[str]:
    result = sys_command(["nft", "list", "tables"], check=False)
    return {line.strip() for line in result.stdout.splitlines() if line.startswith("table ")}


def _shared(names: set[str]) -> set[str]:
    """On a shared host (``VMANAGER_TEST_SHARED_HOST=1``) only this session's names count."""
    if os.environ.get("VMANAGER_TEST_SHARED_HOST"):
        return {n for n in names if _TAG in n}
    return names


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry))
    return found


def _files() -> set[Path]:
    # the private ``net`` directory itself stays; everything in it must go
    return {p for p in _RUN_DIR.rglob("*") if p != _RUN_DIR / "net"}


@pytest.fixture(scope="session", autouse=True)
def _run_dir() -> Iterator[Path]:
    """The private run directory of this test session, removed at the end."""
    yield _RUN_DIR
    shutil.rmtree(_RUN_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_net_leaks() -> Iterator[None]:
    """Fail the test if it leaves a namespace, link, nft table, child process or file."""
    ns_before, links_before = set(pyroute2_netns.listnetns()), _links()
    procs_before, files_before, nft_before = _children(), _files(), _nft_tables()
    yield
    leaked_ns = _shared(set(pyroute2_netns.listnetns()) - ns_before)
    leaked_links = _shared(_links() - links_before)
    leaked_nft = _shared(_nft_tables() - nft_before)
    leaked_procs = _children() - procs_before
    leaked_files = _files() - files_before
    for ns in leaked_ns:
        pyroute2_netns.remove(ns)
    if leaked_links:
        with IPRoute() as ipr:
            for name in leaked_links:
                for index in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=index)
    for pid in leaked_procs:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    for table in leaked_nft:
        sys_command(["nft", "delete", *table.split()], check=False)
    found: dict[str, object] = {"namespaces": leaked_ns, "links": leaked_links,
                                "nft tables": leaked_nft,
                                "processes": leaked_procs, "files": leaked_files}
    problems = {k: v for k, v in found.items() if v}
    if problems:
        pytest.fail(f"test leaked: {problems}")


@pytest.fixture
def name() -> Any:
    """A factory of short unique names (fit in an ifname with a suffix)."""
    def make(prefix: str = "t") -> str:
        return f"{prefix}{_TAG}{next(_counter)}"
    return make


@pytest.fixture
def netns(name: Any) -> Iterator[Any]:
    """A factory of throwaway namespaces, all removed after the test."""
    made: list[Namespace] = []

    def make() -> str:
        ns = Namespace(name("ns"))
        made.append(ns)
        return ns.name

    yield make
    for ns in reversed(made):
        ns.close()
