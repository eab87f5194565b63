"""Making and removing many network objects (and machines) together.

Removing objects one by one costs a kernel wait per link (25-36 ms of RCU
grace periods each); :func:`teardown` and :class:`Group` close many objects in
one :func:`~vmanager.net.batch_removal`, so the kernel removes them in one pass
(100 NICs, each with its own namespace: ~0.2 s instead of ~3 s), and still
return only once all of it is gone. :meth:`Group.create_all` makes independent
objects from a few threads at once: the kernel builds namespaces in parallel
and Python waits less.

>>> with Group() as g:                                   # doctest: +SKIP
...     sw = g.enter(Switch("sw0"))
...     nss = g.create_all(Namespace(f"m{i}", create=False) for i in range(10))
...     nics = g.create_all(VirtualNic(namespace=ns, create=False) for ns in nss)
...     for nic in nics:
...         sw.connect(nic)
...     m = g.enter(Machine("a", nics=[nics[0]]))
... # machines stopped, then every NIC, namespace and the switch removed at once
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self, TypeVar

from vmanager.errors import ConfigError, NetworkError, StateError
from vmanager.net._batch import DEFAULT_TIMEOUT, batch_removal

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads :meth:`Group.create_all` uses by default: on 2 cores more gain nothing.
DEFAULT_WORKERS = 4


def _close(obj: object) -> None:
    """Close ``obj`` the way ``with`` would (``__exit__``), else by ``close()``."""
    exit_ = getattr(obj, "__exit__", None)
    if exit_ is not None:
        exit_(None, None, None)
        return
    close = getattr(obj, "close", None)
    if close is None:
        raise ConfigError(f"cannot tear down {obj!r}: it has neither __exit__ nor close()")
    close()


def teardown(objects: Iterable[object], *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Close ``objects`` in the order given, and remove what they made in one pass.

    Each object is closed as ``with`` would close it (a Machine is stopped, a
    Switch, Namespace, VirtualNic, Router or Bond closed); one failing does not
    stop the rest. Their links and namespaces are removed together when all
    are closed, and the call returns once they are gone. Objects closed already
    are skipped (closing is idempotent).

    Raises:
        ConfigError: an object can be neither exited nor closed (the others are
            still closed).
        NetworkError: something could not be closed or removed; lists all of it.
    """
    failures: list[str] = []
    odd: list[str] = []
    try:
        with batch_removal(timeout=timeout):
            for obj in objects:
                try:
                    _close(obj)
                except ConfigError as exc:
                    odd.append(str(exc))
                except Exception as exc:
                    log.warning("tearing down %r: %s", obj, exc)
                    failures.append(f"{obj!r}: {exc}")
    except NetworkError as exc:
        failures.append(str(exc))
    if failures:
        raise NetworkError("teardown left something behind:\n" + "\n".join(failures + odd))
    if odd:
        raise ConfigError("; ".join(odd))


class Group:
    """Objects that are made as a group and torn down together, in reverse order.

    :meth:`enter` enters one object (like :meth:`contextlib.ExitStack.enter_context`:
    a Switch or Namespace made with ``create=False`` is created, a Machine is
    entered) and remembers it;
    :meth:`create_all` creates many independent ones in parallel. Leaving the
    ``with`` block (or :meth:`close`) tears every remembered object down with
    :func:`teardown`: one kernel clean-up pass for all of them, and nothing
    left when it returns.

    Args:
        workers: threads :meth:`create_all` uses at most.
        timeout: how long the teardown waits for the kernel, in seconds.

    Raises:
        ConfigError: ``workers`` is not a positive integer.
    """

    def __init__(self, *, workers: int = DEFAULT_WORKERS,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.timeout = timeout
        self._members: list[object] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"Group({len(self._members)} objects{', closed' if self._closed else ''})"

    @property
    def members(self) -> list[object]:
        """The objects this group tears down, in the order they joined (a copy)."""
        return list(self._members)

    def _require_open(self) -> None:
        if self._closed:
            raise StateError("the group is closed; make a new Group", state="closed",
                             required="open")

    def enter(self, obj: T) -> T:
        """Enter ``obj`` (``obj.__enter__()``) and remember it for the teardown.

        Returns what ``__enter__`` returned (the object itself for vmanager's).
        An object that cannot be entered is only remembered, to be closed.

        Raises:
            StateError: the group is closed.

        Whatever entering ``obj`` raised propagates; then it is not remembered.
        """
        self._require_open()
        enter = getattr(obj, "__enter__", None)
        result: Any = enter() if enter is not None else obj
        self._members.append(obj)
        return result  # type: ignore[no-any-return]

    def add(self, obj: T) -> T:
        """Remember ``obj`` for the teardown without entering it; returns it."""
        self._require_open()
        self._members.append(obj)
        return obj

    def create_all(self, objects: Iterable[T]) -> list[T]:
        """Enter every object of ``objects`` from up to ``workers`` threads at once.

        Pass network objects made with ``create=False``: entering creates them
        (objects created already are only remembered). The objects must not
        depend on each other (make namespaces in one call,
        then the NICs inside them in the next). Every object that was entered is
        remembered, in the given order, also when others failed.

        Raises:
            StateError: the group is closed.

        When entering objects fails, the first failure propagates after every
        other object was tried; the rest are logged and added to it as notes.
        """
        self._require_open()
        items = list(objects)
        if not items:
            return []
        entered: list[bool] = [False] * len(items)

        def enter(index: int) -> None:
            enter_ = getattr(items[index], "__enter__", None)
            if enter_ is not None:
                enter_()
            entered[index] = True

        errors: list[BaseException] = []
        workers = min(self.workers, len(items))
        with ThreadPoolExecutor(workers, thread_name_prefix="vmanager-create") as pool:
            # a copy of the caller's context per task (each copy may be entered once)
            futures = [pool.submit(contextvars.copy_context().run, enter, i)
                       for i in range(len(items))]
            for future in futures:
                exc = future.exception()
                if exc is not None:
                    errors.append(exc)
        self._members.extend(obj for obj, ok in zip(items, entered, strict=True) if ok)
        if errors:
            first = errors[0]
            for other in errors[1:]:
                log.warning("create_all: another object failed too: %s", other)
                first.add_note(f"also failed: {type(other).__name__}: {other}")
            raise first
        return items

    def close(self) -> None:
        """Tear every remembered object down, in reverse order, in one pass (idempotent).

        Raises:
            NetworkError / ConfigError: see :func:`teardown`.
        """
        if self._closed:
            return
        self._closed = True
        members, self._members = self._members, []
        teardown(reversed(members), timeout=self.timeout)

    def __enter__(self) -> Self:
        self._require_open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except (NetworkError, ConfigError) as cleanup:
            log.warning("tearing the group down after %s: %s", type(exc).__name__, cleanup)
