"""Namespace lifecycle."""

from __future__ import annotations

import os
from typing import Any

import pytest

from vmanager.errors import ConfigError, StateError
from vmanager.net import Lifecycle, Namespace


def test_namespace_is_created_and_removed(name: Any) -> None:
    ns = Namespace(name("ns"), create=False)
    assert not ns.exists
    with ns:
        assert ns.exists and os.path.exists(f"/run/netns/{ns.name}")
        assert ns.state is Lifecycle.CREATED
    assert not ns.exists
    ns.close()  # idempotent
    with pytest.raises(StateError):
        ns.create()  # a closed object does not come back


def test_existing_namespace_is_refused_and_kept(name: Any) -> None:
    with Namespace(name("ns")) as first:
        with pytest.raises(ConfigError, match="already exists"):
            Namespace(first.name)
        assert first.exists


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "x" * 40, ".."])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        Namespace(bad)
