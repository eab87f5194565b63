"""What every benchmark gets: the guest, repetitions, a scratch directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmanager.guests import TinyGuest


@dataclass
class Context:
    guest: TinyGuest
    qemu: str
    accel: str
    work: Path
    full: bool
    libvirt: bool = False
    #: cold boots to shell (s) of the default tiny guest, shared between rows
    cold_boots: list[float] = field(default_factory=list)
    #: idle RSS (MiB) of the tiny guest on a plain ``-M pc`` (bench/plainpc.py)
    plain_rss: list[float] = field(default_factory=list)

    def reps(self, quick: int, full: int) -> int:
        return full if self.full else quick

    def machine_args(self, name: str, **extra: Any) -> dict[str, Any]:
        args = self.guest.machine_args(name)
        args.update(extra)
        return args
