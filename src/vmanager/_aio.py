"""One background asyncio loop that carries every socket vmanager talks to.

Users get a synchronous API; QMP clients and console readers live on this loop,
so a console keeps being drained even while the user's thread sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use in a daemon thread."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(ready.set)
                new.run_forever()

            threading.Thread(target=run, name="vmanager-io", daemon=True).start()
            ready.wait()
            _loop = new
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the shared loop and wait for its result.

    Raises :class:`TimeoutError` after ``timeout`` seconds (the coroutine is cancelled).
    """
    lp = loop()
    fut = asyncio.run_coroutine_threadsafe(coro, lp)
    try:
        return fut.result(timeout)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise TimeoutError(f"timed out after {timeout} s") from None


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the shared loop without waiting for it."""
    return asyncio.run_coroutine_threadsafe(coro, loop())
