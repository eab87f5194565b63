"""Shared fixtures: the tiny guest, machines that always get cleaned up, leak checks.

Every test is checked for leaks: processes (QEMU, dnsmasq, helpers: anything
started by the test run, found by an environment variable every child
inherits), network namespaces, host links and per-machine run directories that
appeared during the test and are still there afterwards fail it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmanager import Machine
from vmanager.guests import TinyGuest, tiny_guest
from vmtest_util import unique_name

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="vmt-"))
# This run's temporary files (and its children's: TMPDIR is inherited) live in a
# directory of its own, so the leak check never counts another run's files.
_TMP_DIR = _SESSION_DIR / "tmp"
_TMP_DIR.mkdir(mode=0o700)
os.environ["TMPDIR"] = tempfile.tempdir = str(_TMP_DIR)

#: Inherited by every process the tests start; the leak check finds them by it.
MARK_ENV = "VMANAGER_TEST_RUN"
#: Unique per test run (a nested pytest run gets its own, so runs never mix).
_RUN_MARK = f"{os.getpid()}-{secrets.token_hex(8)}"
os.environ[MARK_ENV] = _RUN_MARK
#: The session's own process. A forked child (a library's helper, a test's
#: fork) that gets back into pytest must never run tests or the session's
#: teardown: it would tear down shared machines and remove this run's files.
_SESSION_PID = os.getpid()


def _exit_if_forked_copy() -> None:
    if os.getpid() != _SESSION_PID:
        os._exit(70)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    _exit_if_forked_copy()


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt() -> None:
    _exit_if_forked_copy()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish() -> None:
    _exit_if_forked_copy()


def pytest_configure(config: pytest.Config) -> None:
    # Keep test state apart from a user's machines; keep the guest cache shared.
    os.environ.setdefault("VMANAGER_RUN_DIR", str(_SESSION_DIR / "run"))
    os.environ.setdefault("VMANAGER_STATE_DIR", str(_SESSION_DIR / "state"))


def pytest_unconfigure(config: pytest.Config) -> None:
    _exit_if_forked_copy()
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def _marked_pids() -> set[int]:
    """Live processes of this test run, whatever started them and wherever they went.

    Every process the tests start inherits :data:`MARK_ENV` (QEMU, dnsmasq, nft,
    namespace helpers, CLI subprocesses and what they start, daemons that
    double-forked away from pytest); its value is unique to this run, so parallel
    runs on a shared host never count each other's processes.
    """
    pids = set()
    me = os.getpid()
    needle = f"{MARK_ENV}={_RUN_MARK}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if not zombie and needle in environ.split(b"\0"):
            pids.add(int(entry))
    return pids


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} {b' '.join(argv).decode(errors='replace').strip()[:200]}"


def kill_leaked(pids: set[int]) -> None:
    """SIGKILL leaked processes of this run (the next test starts clean)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        with contextlib.suppress(ChildProcessError):  # not our child: PID 1 reaps it
            os.waitpid(pid, 0)


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
    return {p.name for p in _TMP_DIR.iterdir() if p.name.startswith(("vmanager-", ".vmanager"))}


def snapshot_host() -> dict[str, set[Any]]:
    """What a test could leak, as sets (sockets live in the run directories).

    ``VMANAGER_TEST_SHARED_HOST=1`` skips namespaces and links, which cannot be
    told apart when several test runs share one host (development only; CI
    runs alone and checks everything).
    """
    found: dict[str, set[Any]] = {"processes": _marked_pids(),
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
        procs = leaked.pop("processes", set())
        if procs:
            leaked["processes"] = {_describe(pid) for pid in procs}
            kill_leaked(procs)
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
