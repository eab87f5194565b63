"""Pure helpers behind a Machine's screen: images, OCR, the US key map, pointer scaling.

Nothing here talks to QEMU; :mod:`vmanager.machine.screen` and
:mod:`vmanager.machine.input` use these on the images and events they exchange
with a running machine. Pillow (``pip install 'vmanager[screen]'``) is imported
only by the calls that need it.
"""

from vmanager.screen.image import RegionMatch, Screenshot
from vmanager.screen.keys import US_KEYMAP, keys_for_text
from vmanager.screen.pointer import ABS_MAX, MOUSE_BUTTONS, abs_axis, button_name

__all__ = ["ABS_MAX", "MOUSE_BUTTONS", "US_KEYMAP", "RegionMatch", "Screenshot", "abs_axis",
           "button_name", "keys_for_text"]
