"""The demo's results and how they are shown: dataclasses, the summary table, step timing."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(message, flush=True)



@dataclass(frozen=True)
class PingResult:
    """One ping from a machine: the target's name and address, and how it went."""

    target: str
    address: str | None
    ok: bool
    rtt_ms: float | None = None


@dataclass(frozen=True)
class MachineResult:
    """What the demo saw of one machine."""

    name: str
    mac: str
    address: str | None  #: the guest's eth0 address after DHCP
    lease: str | None  #: the router's DHCP lease for the machine's MAC
    boot_s: float | None  #: QEMU start to the guest's shell answering
    pings: tuple[PingResult, ...] = ()


@dataclass(frozen=True)
class DemoResult:
    """The whole run: machines, files written, timings and every problem seen."""

    lab: str
    accel: str | None
    subnet: str
    outside: str
    machines: tuple[MachineResult, ...]
    files: tuple[Path, ...]
    timings: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every step worked and nothing was left behind."""
        return not self.problems



def summary_table(result: DemoResult) -> str:
    """The summary as a text table: one row per machine, one column per ping target."""
    targets = [m.name for m in result.machines] + ["outside"]
    headers = ["machine", "address (DHCP)", "MAC", "boot", *(f"to {t}" for t in targets)]
    rows = []
    for m in result.machines:
        pings = {p.target: p for p in m.pings}
        cells = []
        for t in targets:
            p = pings.get(t)
            cells.append("-" if p is None else "FAIL" if not p.ok else
                         f"ok {p.rtt_ms:.1f} ms" if p.rtt_ms is not None else "ok")
        rows.append([m.name, m.address or "none", m.mac,
                     f"{m.boot_s:.1f} s" if m.boot_s is not None else "-", *cells])
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [headers, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def _jsonable(result: DemoResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["files"] = [str(f) for f in result.files]
    data["ok"] = result.ok
    return data


def _never_raising(say: Say) -> Say:
    """``say``, minus its errors: a closed stdout (``| head``) must not stop the teardown."""
    def safe(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            say(message)
    return safe


def _step(say: Say) -> Callable[[str], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def step(message: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        except BaseException:
            say(f"  {message:<30} failed")
            raise
        say(f"  {message:<30} {time.monotonic() - t:5.2f} s")
    return step
