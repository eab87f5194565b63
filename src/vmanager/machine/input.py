"""Keyboard and absolute mouse of a Machine (``m.input``): ``send-key``, ``input-send-event``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vmanager.errors import ConfigError
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.screen import keys as keynames
from vmanager.screen.pointer import abs_axis, button_name

Button = int | str


class Input(Part):
    """Key presses, typing text and driving an absolute pointer in screen pixels.

    The pointer goes through the tablet :class:`~vmanager.machine.screen.Screen`
    adds at launch (``virtio-tablet-pci`` by default); positions are pixels of
    the current screen, which is measured on each call so a mode change is
    followed.
    """

    key = "input"

    def __init__(self, vm: MachineView, screen_size: Callable[[], tuple[int, int]]) -> None:
        self._vm = vm
        self._screen_size = screen_size
        self._mouse_position: tuple[int, int] | None = None

    def teardown(self) -> None:
        """The pointer's position is unknown after a restart."""
        self._mouse_position = None

    # -- keyboard -------------------------------------------------------------------
    def send_key(self, combo: str, *, hold_ms: int = 100) -> None:
        """Press a key combination such as ``"ctrl-alt-del"`` (QEMU key names)."""
        codes = keynames.parse_combo(combo)
        self._send(codes, hold_ms)

    def _send(self, codes: list[str], hold_ms: int) -> None:
        self._vm.qmp("send-key", {"keys": [{"type": "qcode", "data": c} for c in codes],
                                  "hold-time": hold_ms})

    def type(self, text: str, *, interval: float = 0.01, hold_ms: int = 5) -> None:
        """Type ``text`` as a US keyboard would, one key press per character.

        Printable ASCII, ``\\n`` (Enter) and ``\\t`` are typeable; shift is held
        for upper case and shifted symbols. Each character is one QMP
        ``send-key`` (QEMU holds each key ``hold_ms`` and waits as long after
        releasing it), the same queue :meth:`send_key` uses, so typed text and
        key combinations stay in order. The next character is sent only after
        QEMU has played the previous one plus ``interval`` seconds: QEMU's
        keyboard queue never fills up (it drops keys when full) and the guest
        has time to read each scancode.

        Raises :class:`ConfigError` naming characters that cannot be typed (before
        typing anything) or for bad timings, :class:`StateError` unless running.

        Example::

            m.type_text("echo hello > /tmp/x\\n")
        """
        if isinstance(hold_ms, bool) or not isinstance(hold_ms, int) or not 1 <= hold_ms <= 200:
            raise ConfigError(f"hold_ms {hold_ms!r} must be a whole number from 1 to 200")
        if not 0 <= interval <= 10:
            raise ConfigError(f"interval {interval!r} must be from 0 to 10 seconds")
        presses = keynames.keys_for_text(text)
        self._vm.require(State.RUNNING, action="type text")
        self._vm.log.debug("typing %d characters", len(presses))
        for keys in presses:
            started = time.monotonic()
            self._send(list(keys), hold_ms)
            # QEMU waits hold_ms after every key press and every release.
            played = 2 * len(keys) * hold_ms / 1000
            time.sleep(max(0.0, started + played + interval - time.monotonic()))

    # -- mouse ----------------------------------------------------------------------
    @property
    def mouse_position(self) -> tuple[int, int] | None:
        """Where :meth:`mouse_move` last put the pointer, or ``None``."""
        return self._mouse_position

    def mouse_move(self, x: int, y: int) -> None:
        """Move the pointer to pixel ``(x, y)`` of the screen (absolute).

        Raises :class:`ConfigError` when the point is off the current screen,
        :class:`StateError` unless running.
        """
        self._vm.require(State.RUNNING, action="move the mouse")
        size = self._screen_size()
        self._move(x, y, size)

    def _move(self, x: int, y: int, size: tuple[int, int]) -> None:
        self._check_point(x, y, size)
        width, height = size
        self._events([_abs("x", abs_axis(x, width)), _abs("y", abs_axis(y, height))])
        self._mouse_position = (x, y)

    def mouse_down(self, button: Button = 1) -> None:
        """Press and keep holding a mouse button (1/2/3 or ``"left"``...)."""
        self._vm.require(State.RUNNING, action="press a mouse button")
        self._events([_btn(button_name(button), down=True)])

    def mouse_up(self, button: Button = 1) -> None:
        """Release a mouse button."""
        self._vm.require(State.RUNNING, action="release a mouse button")
        self._events([_btn(button_name(button), down=False)])

    def mouse_click(self, button: Button = 1, *, x: int | None = None, y: int | None = None,
                    double: bool = False, hold_ms: int = 50) -> None:
        """Click ``button`` (1 left, 2 middle, 3 right, or their names) where the pointer is.

        With ``x`` and ``y`` the pointer moves there first; ``double=True``
        clicks twice in quick succession. Raises :class:`ConfigError` for an
        unknown button or a point off the screen, :class:`StateError` unless
        running.
        """
        name = button_name(button)
        if (x is None) != (y is None):
            raise ConfigError("mouse_click takes both x and y, or neither")
        if not 1 <= hold_ms <= 1000:
            raise ConfigError(f"hold_ms {hold_ms!r} must be from 1 to 1000")
        self._vm.require(State.RUNNING, action="click the mouse")
        if x is not None and y is not None:
            self.mouse_move(x, y)
        for n in range(2 if double else 1):
            if n:
                time.sleep(hold_ms / 1000)
            self._events([_btn(name, down=True)])
            time.sleep(hold_ms / 1000)
            self._events([_btn(name, down=False)])

    def mouse_drag(self, x1: int, y1: int, x2: int, y2: int, *, button: Button = 1,
                   steps: int = 10, step_delay: float = 0.02) -> None:
        """Press ``button`` at ``(x1, y1)``, move in ``steps`` to ``(x2, y2)``, release.

        Raises :class:`ConfigError` when either end is off the screen (before
        anything is sent) or ``steps`` is not positive.
        """
        name = button_name(button)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive whole number, got {steps!r}")
        self._vm.require(State.RUNNING, action="drag the mouse")
        size = self._screen_size()
        for px, py in ((x1, y1), (x2, y2)):
            self._check_point(px, py, size)
        self._move(x1, y1, size)
        self._events([_btn(name, down=True)])
        try:
            for i in range(1, steps + 1):
                time.sleep(step_delay)
                self._move(x1 + (x2 - x1) * i // steps, y1 + (y2 - y1) * i // steps, size)
            time.sleep(step_delay)
        finally:
            self._events([_btn(name, down=False)])

    def _check_point(self, x: int, y: int, size: tuple[int, int]) -> None:
        width, height = size
        if (isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, int)
                or not isinstance(y, int) or not (0 <= x < width and 0 <= y < height)):
            raise ConfigError(f"mouse position ({x!r}, {y!r}) is outside the {width}x{height} "
                              f"screen (0..{width - 1}, 0..{height - 1})")

    def _events(self, events: list[dict[str, Any]]) -> None:
        self._vm.qmp("input-send-event", {"events": events})


def _abs(axis: str, value: int) -> dict[str, Any]:
    return {"type": "abs", "data": {"axis": axis, "value": value}}


def _btn(button: str, *, down: bool) -> dict[str, Any]:
    return {"type": "btn", "data": {"down": down, "button": button}}
