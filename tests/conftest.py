"""Shared fixtures: the tiny guest, machines that always get cleaned up, leak checks.

Every test is checked for leaks: QEMU processes, network namespaces, host
links and per-machine run directories that appeared during the test and are
still there afterwards fail it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import Machine
from vmanager.guests import TinyGuest, tiny_guest
from vmtest_util import unique_name

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="vmt-"))


def pytest_configure(config: pytest.Config) -> None:
    # Keep test state apart from a user's machines; keep the guest cache shared.
    os.environ.setdefault("VMANAGER_RUN_DIR", str(_SESSION_DIR / "run"))
    os.environ.setdefault("VMANAGER_STATE_DIR", str(_SESSION_DIR / "state"))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def _qemu_pids() -> set[int]:
    """QEMU and dnsmasq processes of this test session (their argv names its dirs)."""
    pids = set()
    marker = str(_SESSION_DIR).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            argv0 = cmdline.split(b"\0", 1)[0]
            if (b"qemu-system" in argv0 or b"dnsmasq" in argv0) and marker in cmdline:
                pids.add(int(entry))
    return pids


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _run_entries() -> set[str]:
    machines = Path(os.environ["VMANAGER_RUN_DIR"]) / "machines"
    try:
        return set(os.listdir(machines))
    except FileNotFoundError:
        return set()


def _device_nodes() -> set[str]:
    """macvtap device nodes vmanager makes (its run dir, or /dev/vmanager on nodev mounts)."""
    found = set()
    for base in (Path(os.environ["VMANAGER_RUN_DIR"]) / "net", Path("/dev/vmanager")):
        if base.is_dir():
            found |= {str(p) for p in base.rglob("*") if p.is_char_device()}
    return found


def _temp_files() -> set[str]:
    """vmanager's temporary files and directories in the system temp dir."""
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in tmp.iterdir() if p.name.startswith(("vmanager-", ".vmanager"))}


def snapshot_host() -> dict[str, set[Any]]:
    """What a test could leak, as sets (sockets live in the run directories).

    ``VMANAGER_TEST_SHARED_HOST=1`` skips namespaces and links, which cannot be
    told apart when several test runs share one host (development only; CI
    runs alone and checks everything).
    """
    found: dict[str, set[Any]] = {"QEMU/dnsmasq processes": _qemu_pids(),
                                  "machine run directories": _run_entries(),
                                  "device nodes": _device_nodes(),
                                  "temporary files": _temp_files()}
    if not os.environ.get("VMANAGER_TEST_SHARED_HOST"):
        found["network namespaces"] = _netns()
        found["host links"] = _links()
    return found


def leaks_since(before: dict[str, set[Any]]) -> dict[str, set[Any]]:
    """What appeared since ``before`` and is still there."""
    after = snapshot_host()
    return {k: after[k] - before[k] for k in after if after[k] - before[k]}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves processes, namespaces, links or run directories behind.

    Tests that use module/session-scoped machines are measured against the
    state after those fixtures were set up, so shared guests are not leaks.
    """
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    before = snapshot_host()
    yield
    leaked = leaks_since(before)
    if leaked:
        pytest.fail(f"test leaked: {leaked}")


@pytest.fixture(scope="session")
def tiny() -> TinyGuest:
    """The tiny guest (built once per cache)."""
    return tiny_guest()




@pytest.fixture
def make_machine(tiny: TinyGuest) -> Iterator[Callable[..., Machine]]:
    """Build tiny-guest machines that are killed after the test whatever happens."""
    made: list[Machine] = []

    def make(name: str | None = None, **kwargs: Any) -> Machine:
        name = name or unique_name()
        args = {**tiny.machine_args(name), "memory": 256, "accel": "auto", **kwargs}
        m = Machine(name, **args)
        made.append(m)
        return m

    yield make
    for m in made:
        m.kill()


@pytest.fixture(scope="module")
def shared_machine(tiny: TinyGuest) -> Iterator[Machine]:
    """One booted tiny guest shared by a module's tests (do not stop it in a test)."""
    m = Machine(unique_name("s"), **tiny.machine_args(), memory=256)
    m.start_vm()
    m.wait_ready(120)
    yield m
    m.kill()
