"""What the demo runs in every guest at once: DHCP, pings, the screenshot."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from vmanager.demo.output import PingResult
from vmanager.errors import GuestError
from vmanager.machine import Machine

#: dnsmasq pings an address before offering it and answers no DISCOVER meanwhile,
#: so three clients at once take ~9 s; -T 3 keeps a client from giving up on a
#: late offer or ACK (-T 1 does), -t 10 leaves room on a slow host.
DHCP = "udhcpc -i eth0 -n -q -t 10 -T 3"
STEP_TIMEOUT = 30.0

T = TypeVar("T")


def _parallel(pool: ThreadPoolExecutor, tasks: dict[str, Callable[[float], T]],
              timeout: float) -> dict[str, T]:
    """Run ``task(timeout)`` for every machine at once; the first failure is raised."""
    futures: dict[str, Future[T]] = {n: pool.submit(task, timeout) for n, task in tasks.items()}
    done: dict[str, T] = {}
    for name, f in futures.items():
        try:
            done[name] = f.result(timeout + 10.0)
        except TimeoutError as exc:
            if f.done():
                raise  # the task's own timeout, which names what it waited for
            raise GuestError(f"machine {name!r}: no answer within {timeout + 10.0:g} s") from exc
    return done


def _dhcp_task(m: Machine) -> Callable[[float], str | None]:
    def task(timeout: float) -> str | None:
        m.execute(DHCP, timeout=timeout)  # the address, if any, is what counts
        shown = m.succeed("ip -o -4 addr show dev eth0", timeout=timeout)
        found = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", shown)
        return found.group(1) if found else None
    return task


def _ping_task(m: Machine, name: str,
               targets: dict[str, str | None]) -> Callable[[float], list[PingResult]]:
    def task(timeout: float) -> list[PingResult]:
        out = []
        for target, address in targets.items():
            if target == name:
                continue
            if address is None:
                out.append(PingResult(target, None, False))
                continue
            r = m.execute(f"ping -c 1 -W 3 {address}", timeout=timeout)
            rtt = re.search(r"time=([\d.]+) ms", r.stdout)
            out.append(PingResult(target, address, r.status == 0,
                                  float(rtt.group(1)) if rtt else None))
        return out
    return task


def _address_problems(name: str, address: str | None, lease: str | None,
                      subnet: ipaddress.IPv4Network) -> list[str]:
    if address is None:
        return [f"{name} got no DHCP address"]
    if ipaddress.IPv4Address(address) not in subnet:
        return [f"{name}'s address {address} is not in the router's subnet {subnet}"]
    if lease != address:
        return [f"{name} has {address} but the router's lease says {lease}"]
    return []


def _screenshot(m: Machine, path: Path, outside: str) -> None:
    """Put the guest's own view of the network on tty1, then take the PNG."""
    m.succeed("chvt 1; echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null; "
              "clear > /dev/tty1", timeout=STEP_TIMEOUT)
    m.succeed(f"{{ echo \"vmanager demo: $(hostname)\"; echo; ip -4 addr show dev eth0; "
              f"echo; ip route; echo; ping -c 2 -W 3 {outside}; }} > /dev/tty1 2>&1; true",
              timeout=STEP_TIMEOUT)
    time.sleep(0.2)  # let the framebuffer console draw the last lines
    m.screenshot(path)
