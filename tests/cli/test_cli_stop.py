"""``vmanager stop`` is forceful; ``--graceful`` powers off through ACPI or leaves it running."""

from __future__ import annotations

import time

import pytest

from vmanager.cli.main import EXIT_GUEST
from vmanager.qemu.launch import pid_alive
from vmcli import js, ok, vm
from vmtest_util import unique_name

pytestmark = pytest.mark.guest


def _row(name: str) -> dict[str, object]:
    return next(r for r in js("list") if r["name"] == name)


def test_stop_is_forceful_and_graceful_is_asked_for(tiny: object) -> None:
    name = unique_name("cs")
    ok("define", name, "--guest", "tiny", "--memory", "256")
    try:
        ok("start", name, "--wait-ready")
        ok("exec", name, "--", "killall acpid")      # the guest ignores the power button now
        r = vm("stop", name, "--graceful", "--timeout", "3")
        assert r.returncode == EXIT_GUEST, r.stderr
        assert "did not power off within 3" in r.stderr
        assert _row(name)["state"] == "running"     # left running for the user to decide
        assert ok("exec", name, "echo", "alive") == "alive\n"
        pid = _row(name)["pid"]
        started = time.monotonic()
        ok("stop", name)
        took = time.monotonic() - started
        # QEMU is no child of this process: init reaps it, a zombie for a moment
        assert not pid_alive(int(pid)) and _row(name)["state"] != "running"  # type: ignore[call-overload]
        assert took < 15, f"vmanager stop took {took:.1f} s (the ACPI wait was 30 s)"

        ok("start", name, "--wait-ready")           # acpid runs again after a fresh boot
        pid = _row(name)["pid"]
        ok("stop", name, "--graceful", "--timeout", "60")
        assert not pid_alive(int(pid)) and _row(name)["state"] != "running"  # type: ignore[call-overload]
    finally:
        vm("kill", name)
        vm("undefine", name)
