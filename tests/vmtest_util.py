"""Helpers shared by test modules (importable by name: ``conftest`` is not, with
several conftest.py files in the tree)."""

from __future__ import annotations

import secrets


def unique_name(prefix: str = "t") -> str:
    """A machine/namespace name no other test uses (short: it names netns and links)."""
    return f"{prefix}{secrets.token_hex(3)}"
