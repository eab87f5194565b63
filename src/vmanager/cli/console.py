"""``vmanager console``: the serial console in a terminal, or fed from stdin."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmanager.machine import Machine


def batch(m: Machine, wait: float) -> int:
    """Feed stdin to the console; print what it prints until ``wait`` s of quiet."""
    start = m.console.offset  # absolute: the history is bounded
    data = sys.stdin.buffer.read()
    if data:
        m.console.write(data)
    last, seen = time.monotonic(), start
    while time.monotonic() - last < wait:
        time.sleep(0.05)
        now = m.console.offset
        if now != seen:
            seen, last = now, time.monotonic()
    sys.stdout.buffer.write(m.console.read_bytes(start))
    sys.stdout.flush()
    return 0


def interactive(m: Machine, *, escape: bytes) -> int:
    """Raw terminal <-> the serial console until ``escape`` (Ctrl-]) is typed."""
    import select
    import termios
    import tty
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    print(f"connected to {m.name}'s serial console; Ctrl-] leaves", file=sys.stderr)
    pos = m.console.offset
    out = sys.stdout.buffer
    try:
        tty.setraw(fd)
        while True:
            data, pos = m.console.read_since(pos)
            if data:
                out.write(data)
                out.flush()
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                chunk = os.read(fd, 1024)
                if not chunk or escape in chunk:
                    before = chunk.split(escape, 1)[0]
                    if before:
                        m.console.write(before)
                    break
                m.console.write(chunk)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    print(f"\r\nleft {m.name}'s console (it keeps running)", file=sys.stderr)
    return 0
