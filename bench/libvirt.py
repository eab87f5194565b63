"""Placeholder until written."""

from __future__ import annotations

from bench.context import Context
from bench.core import Row, Skip


def virsh_start(ctx: Context) -> list[Row]:
    raise Skip("not written yet")
