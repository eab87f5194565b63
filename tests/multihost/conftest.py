"""The simulated servers, one set per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmanager.guests import TinyGuest
from vmanager.multihost import Simulation
from vmtest_util import unique_name


@pytest.fixture(scope="module")
def sim(tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulation]:
    base = Path(os.environ["VMANAGER_RUN_DIR"]).parent / f"sim-{unique_name('')}"
    with Simulation(2, base_dir=base) as simulation:
        yield simulation
        assert simulation.leftovers() == {}, "processes left on the servers"
