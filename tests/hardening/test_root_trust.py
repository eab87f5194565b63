"""Root trusts only its own directories and files; small ownership and naming rules.

Each test plants what another user could plant (a directory they own, a
symlink where a lock goes, a process whose argv names a similar machine) and
checks that vmanager refuses or ignores it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmanager import paths
from vmanager.errors import ConfigError, HostError
from vmanager.lab import spec
from vmanager.qemu import launch
from vmanager.state.lock import FileLock, lock_path

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plays root against another user")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("VMANAGER_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _users_dir(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    os.chmod(where.parent, 0o755)
    os.chown(where, NOBODY, NOBODY)
    return where


@needs_root
def test_root_ignores_a_home_owned_by_another_user(clean_env: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home = _users_dir(clean_env / "alice")
    (home / ".cache").mkdir()
    os.chown(home / ".cache", NOBODY, NOBODY)
    monkeypatch.setenv("HOME", str(home))  # what sudo -E keeps
    assert paths.cache_dir() == Path("/var/cache/vmanager")


@needs_root
def test_root_ignores_an_xdg_cache_writable_by_others(clean_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = clean_env / "xdg"
    xdg.mkdir(mode=0o777)
    os.chmod(xdg, 0o777)
    os.chmod(clean_env, 0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("HOME", "/nonexistent-home")
    assert paths.cache_dir() == Path("/var/cache/vmanager")


@needs_root
def test_root_uses_its_own_home_cache(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = clean_env / "roothome"
    (home / ".cache").mkdir(parents=True)
    os.chmod(clean_env, 0o755)
    monkeypatch.setenv("HOME", str(home))
    assert paths.cache_dir() == home / ".cache" / "vmanager"


@needs_root
def test_root_refuses_a_vmanager_dir_variable_pointing_into_another_users_dir(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = _users_dir(clean_env / "bob")
    monkeypatch.setenv("VMANAGER_CACHE_DIR", str(theirs / "cache"))
    with pytest.raises(HostError, match="not safe for root"):
        paths.cache_dir()


def test_a_lock_is_never_taken_through_a_symlink(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMANAGER_STATE_DIR", str(tmp_path / "state"))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = lock_path("machine", "web")
    target.symlink_to(victim)
    with pytest.raises(HostError, match="symlink"):
        FileLock(target, what="machine 'web'").acquire(timeout=0)
    assert victim.read_text() == "precious\n"


def test_top_level_state_and_run_directories_are_0700(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMANAGER_STATE_DIR", str(tmp_path / "a" / "state"))
    monkeypatch.setenv("VMANAGER_RUN_DIR", str(tmp_path / "b" / "run"))
    paths.private_dir(paths.state_dir() / "machines")
    paths.private_dir(paths.run_dir() / "machines" / "web")
    for top in (paths.state_dir(), paths.run_dir(), paths.run_dir() / "machines"):
        assert stat.S_IMODE(top.stat().st_mode) == 0o700, top


@needs_root
def test_a_run_directory_owned_by_another_user_is_refused(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the /tmp/vmanager-UID fallback: somebody made it first
    planted = _users_dir(tmp_path / "vmanager-0")
    monkeypatch.setenv("VMANAGER_RUN_DIR", str(tmp_path / "ok-run"))
    with pytest.raises(HostError, match="owned by uid 65534"):
        paths.private_dir(planted)
    assert stat.S_IMODE(planted.stat().st_mode) != 0o700 or planted.stat().st_uid == NOBODY


def test_a_symlinked_private_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(HostError, match="not a directory"):
        paths.private_dir(tmp_path / "link")


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A live process whose argv names machines/web-2's pidfile, recorded in web's pidfile."""
    machines = tmp_path / "machines"
    web, web2 = machines / "web", machines / "web-2"
    web.mkdir(parents=True)
    web2.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "-pidfile", str(web2 / "qemu.pid")])
    try:
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # exec still under way
            time.sleep(0.01)
        (web / "qemu.pid").write_text(f"{proc.pid}\n")
        (web2 / "qemu.pid").write_text(f"{proc.pid}\n")
        yield web, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_the_pidfile_check_does_not_match_a_longer_machine_name(
        impostor: tuple[Path, int]) -> None:
    web, pid = impostor
    assert launch.owner_pid(web) is None
    assert launch.owner_pid(web.with_name("web-2")) == pid


def test_a_port_name_too_long_for_the_links_beside_it_is_refused_at_validation() -> None:
    body = '[lab]\nname = "l1"\n[hosts.h1]\nport = "{}"\n'
    spec.parse(body.format("p" * 14))
    with pytest.raises(ConfigError, match="at most 14"):
        spec.parse(body.format("p" * 15))
