"""Absolute pointer coordinates and mouse button names for QMP ``input-send-event``."""

from __future__ import annotations

from vmanager.errors import ConfigError

#: QEMU's absolute axes run from 0 to this value (``INPUT_EVENT_ABS_MAX``).
ABS_MAX = 0x7FFF

#: Accepted button names (QAPI ``InputButton``) and the X11 numbers for them.
MOUSE_BUTTONS: dict[int | str, str] = {
    1: "left", 2: "middle", 3: "right", 4: "wheel-up", 5: "wheel-down",
    "left": "left", "middle": "middle", "right": "right", "wheel-up": "wheel-up",
    "wheel-down": "wheel-down", "side": "side", "extra": "extra",
}


def abs_axis(pixel: int, size: int) -> int:
    """The absolute axis value (0..ABS_MAX) that lands on ``pixel`` of ``size`` pixels.

    It aims at the pixel's centre, so a guest that maps back with
    ``value * size // (ABS_MAX + 1)`` (libinput, Linux evdev users) or with
    rounding over ``size - 1`` gets ``pixel`` again. Raises :class:`ConfigError`
    when ``pixel`` is not on the screen.
    """
    if size <= 0:
        raise ConfigError(f"screen size {size} is not positive")
    if isinstance(pixel, bool) or not isinstance(pixel, int) or not 0 <= pixel < size:
        raise ConfigError(f"coordinate {pixel!r} is outside the screen (0..{size - 1})")
    return min(ABS_MAX, ((2 * pixel + 1) * (ABS_MAX + 1)) // (2 * size))


def button_name(button: int | str) -> str:
    """QEMU's name for a mouse button given as 1/2/3 (X11 numbering) or a name.

    Raises :class:`ConfigError` listing the accepted buttons.
    """
    key = button.lower() if isinstance(button, str) else button
    if isinstance(key, bool) or key not in MOUSE_BUTTONS:
        valid = ", ".join(str(b) for b in MOUSE_BUTTONS)
        raise ConfigError(f"unknown mouse button {button!r}; use one of {valid}")
    return MOUSE_BUTTONS[key]
