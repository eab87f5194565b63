"""One machine defined and started through the CLI, shared by the module's tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from vmcli import ok, vm


def unique_name(prefix: str) -> str:
    """A machine name no other test uses."""
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def cli_machine(tiny: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny guest with a small qcow2 disk (for snapshots), started by ``vmanager start``."""
    name = unique_name("c")
    disk = tmp_path_factory.mktemp("disk") / f"{name}.qcow2"
    ok("define", name, "--guest", "tiny", "--memory", "256", "--disk", f"{disk}:64M")
    try:
        ok("start", name, "--wait-ready")
        yield name
    finally:
        vm("kill", name)
        vm("undefine", name)
