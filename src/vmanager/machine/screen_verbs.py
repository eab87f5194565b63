"""The seed's screen, keyboard and mouse methods of a Machine (delegates to its parts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

    from vmanager.machine.input import Button, Input
    from vmanager.machine.screen import Region, Screen, Tablet
    from vmanager.screen.image import RegionMatch, Screenshot


class ScreenVerbs:
    """Flat screen and input methods; see :class:`~vmanager.machine.screen.Screen`."""

    screen: Screen
    input: Input

    # -- set-up -------------------------------------------------------------------------
    @property
    def vga(self) -> str:
        """The display adapter (QEMU ``-vga`` model); see :meth:`configure_screen`."""
        return self.screen.vga

    @vga.setter
    def vga(self, model: str) -> None:
        self.screen.configure(vga=model)

    @property
    def tablet(self) -> Tablet:
        """The pointer device: ``"virtio"``, ``"usb"`` or ``None``."""
        return self.screen.tablet

    @tablet.setter
    def tablet(self, kind: Tablet) -> None:
        self.screen.configure(tablet=kind)

    @property
    def screenshot_dir(self) -> Path:
        """Where screenshots without a file name and those of failed waits go."""
        return self.screen.screenshot_dir

    @screenshot_dir.setter
    def screenshot_dir(self, path: Path) -> None:
        self.screen.screenshot_dir = Path(path)

    @property
    def vnc_socket(self) -> Path | None:
        """The VNC server's unix socket while it is open."""
        return self.screen.vnc_socket

    def configure_screen(self, *, vga: str | None = None,
                         tablet: Tablet | Literal["keep"] = "keep") -> None:
        """Choose the display adapter and pointer device before :meth:`start_vm`.

        ``vga`` is a QEMU ``-vga`` model (``std``, ``virtio``, ``cirrus``, ``qxl``,
        ``none``); ``tablet`` is ``"virtio"`` (``virtio-tablet-pci``, the default),
        ``"usb"`` (``usb-tablet`` on an XHCI controller, for guests without
        virtio drivers) or ``None``. Raises :class:`ConfigError` for unknown
        values, :class:`StateError` while the machine runs.
        """
        self.screen.configure(vga=vga, tablet=tablet)

    def enable_vnc(self) -> Path:
        """Serve the screen over VNC on an owner-only unix socket; return its path."""
        return self.screen.enable_vnc()

    def disable_vnc(self) -> None:
        """Close the VNC server (connected viewers are dropped); idempotent."""
        self.screen.disable_vnc()

    # -- screenshots and waits ------------------------------------------------------------
    def screenshot(self, filename: str | Path | None = None) -> Screenshot:
        """Store a PNG of the screen in ``filename`` and return its path and size.

        Without ``filename`` the PNG goes to ``screenshot_dir`` under a fresh name.
        Raises :class:`NotFoundError` naming a missing target directory,
        :class:`ConfigError` when ``filename`` is a directory, :class:`StateError`
        unless the machine runs (or is frozen).
        """
        return self.screen.screenshot(filename)

    def screenshot_image(self) -> Image:
        """The screen as an RGB ``PIL.Image`` in memory (needs Pillow)."""
        return self.screen.screenshot_image()

    def screen_size(self) -> tuple[int, int]:
        """The current ``(width, height)`` of the guest's screen in pixels."""
        return self.screen.screen_size()

    def save_region(self, filename: str | Path, x: int, y: int, width: int,
                    height: int) -> Screenshot:
        """Store a PNG of one region of the screen, e.g. as a reference for matching."""
        return self.screen.save_region(filename, x, y, width, height)

    def get_screen_text(self, *, region: Region | None = None) -> str:
        """The text OCR (tesseract) reads on the screen, or on ``region`` (x, y, w, h)."""
        return self.screen.get_screen_text(region=region)

    def wait_for_text(self, text: str | re.Pattern[str], timeout: float = 60.0, *,
                      region: Region | None = None) -> str:
        """Wait until OCR reads ``text`` on the screen; return everything it read.

        A string matches as a substring with runs of white space treated as one
        space; a compiled pattern is searched. Raises :class:`ScreenTimeout`
        (with the last screenshot saved in ``screenshot_dir``) after ``timeout``
        seconds.
        """
        return self.screen.wait_for_text(text, timeout, region=region)

    def wait_for_screen_change(self, timeout: float = 30.0, *, since: Image | None = None,
                               region: Region | None = None, min_changed: int = 64,
                               interval: float = 0.1) -> Image:
        """Wait until the screen differs from ``since`` (default: the screen now)."""
        return self.screen.wait_for_screen_change(timeout, since=since, region=region,
                                                  min_changed=min_changed, interval=interval)

    def match_region(self, reference: str | Path | Image, x: int, y: int, *,
                     tolerance: float = 0.01, pixel_threshold: int = 32) -> RegionMatch:
        """Compare the screen at ``(x, y)`` with a reference image (a PNG or an Image)."""
        return self.screen.match_region(reference, x, y, tolerance=tolerance,
                                        pixel_threshold=pixel_threshold)

    def wait_for_image(self, reference: str | Path | Image, x: int, y: int, *,
                       timeout: float = 30.0, tolerance: float = 0.01,
                       pixel_threshold: int = 32) -> RegionMatch:
        """Wait until :meth:`match_region` matches; return the match."""
        return self.screen.wait_for_image(reference, x, y, timeout=timeout,
                                          tolerance=tolerance, pixel_threshold=pixel_threshold)

    # -- keyboard and mouse (m.input) -------------------------------------------------------
    def send_key(self, combo: str, *, hold_ms: int = 100) -> None:
        """Press a key combination such as ``"ctrl-alt-del"`` (QEMU key names)."""
        self.input.send_key(combo, hold_ms=hold_ms)

    def type_text(self, text: str, *, interval: float = 0.01, hold_ms: int = 5) -> None:
        """Type ``text`` as a US keyboard would, one key press per character.

        Raises :class:`ConfigError` naming characters that cannot be typed (before
        typing anything) or for bad timings, :class:`StateError` unless running.
        """
        self.input.type(text, interval=interval, hold_ms=hold_ms)

    @property
    def mouse_position(self) -> tuple[int, int] | None:
        """Where :meth:`mouse_move` last put the pointer, or ``None``."""
        return self.input.mouse_position

    def mouse_move(self, x: int, y: int) -> None:
        """Move the pointer to pixel ``(x, y)`` of the screen (absolute)."""
        self.input.mouse_move(x, y)

    def mouse_down(self, button: Button = 1) -> None:
        """Press and keep holding a mouse button (1/2/3 or ``"left"``...)."""
        self.input.mouse_down(button)

    def mouse_up(self, button: Button = 1) -> None:
        """Release a mouse button."""
        self.input.mouse_up(button)

    def mouse_click(self, button: Button = 1, *, x: int | None = None, y: int | None = None,
                    double: bool = False, hold_ms: int = 50) -> None:
        """Click ``button`` where the pointer is (or at ``x``, ``y``); ``double`` clicks twice."""
        self.input.mouse_click(button, x=x, y=y, double=double, hold_ms=hold_ms)

    def mouse_drag(self, x1: int, y1: int, x2: int, y2: int, *, button: Button = 1,
                   steps: int = 10, step_delay: float = 0.02) -> None:
        """Press ``button`` at ``(x1, y1)``, move in ``steps`` to ``(x2, y2)``, release."""
        self.input.mouse_drag(x1, y1, x2, y2, button=button, steps=steps,
                              step_delay=step_delay)
