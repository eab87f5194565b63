"""The screen of a Machine (``m.screen``): display adapter, screenshots, waiting, VNC.

Machines are headless (``-display none``) with a display adapter, so there is
always a screen to capture, and a tablet for an absolute pointer. Screenshots
come from QMP ``screendump``: PNG straight from QEMU when it can write PNG
(QEMU >= 7.1 built with libpng), else PPM converted with Pillow. In-memory
images (:meth:`Screen.screenshot_image`) use PPM, which QEMU writes and
Pillow reads fastest.

A VNC server is never listening unless asked for: QEMU starts with ``-vnc none``
(a VNC display without any listener, idle while nobody is connected) so
:meth:`Screen.enable_vnc` can later open it on a unix socket in the
machine's private run directory with QMP ``display-update``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vmanager import paths
from vmanager.errors import ConfigError, NotFoundError, QMPError
from vmanager.machine.base import State
from vmanager.machine.part import MachineView, Part
from vmanager.machine.screen_waits import Region as Region
from vmanager.machine.screen_waits import ScreenWaits
from vmanager.qemu import cmdline
from vmanager.screen.image import (
    Screenshot,
    check_box,
    pil,
    png_size,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from vmanager.qemu.cmdline import MachineSpec

Tablet = Literal["virtio", "usb"] | None

_PPM_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s")
_VGA_CHOICES = cmdline.VGA_MODELS


class Screen(ScreenWaits, Part):
    """A headless display adapter, a tablet, screenshots, screen waits and VNC.

    Attributes set before :meth:`start_vm` (see :meth:`configure_screen`):
    ``vga`` (QEMU ``-vga`` model), ``tablet`` (``"virtio"``, ``"usb"`` or
    ``None``). ``screenshot_dir`` is where screenshots without a file name and
    those saved for a failed wait go (default: the state directory's
    ``screenshots/<name>``; it outlives the machine).
    """

    key = "screen"

    def __init__(self, vm: MachineView) -> None:
        self._vm = vm
        self.vga = "std"
        self.tablet: Tablet = "virtio"
        self.screenshot_dir = paths.state_dir() / "screenshots" / vm.name
        self.vnc_socket: Path | None = None
        self._vnc_wanted = False
        self._png_screendump: bool | None = None
        self._dump_lock = threading.Lock()
        self._shot_seq = 0

    @property
    def name(self) -> str:
        """The machine's name."""
        return self._vm.name

    @property
    def log(self) -> logging.Logger:
        """The machine's logger."""
        return self._vm.log

    def configure(self, *, vga: str | None = None,
                         tablet: Tablet | Literal["keep"] = "keep") -> None:
        """Choose the display adapter and pointer device before :meth:`start_vm`.

        ``vga`` is a QEMU ``-vga`` model (``std``, ``virtio``, ``cirrus``, ``qxl``,
        ``none``); ``tablet`` is ``"virtio"`` (``virtio-tablet-pci``, the default),
        ``"usb"`` (``usb-tablet`` on an XHCI controller, for guests without
        virtio drivers) or ``None``. Raises :class:`ConfigError` for unknown
        values, :class:`StateError` while the machine runs.
        """
        self._vm.require(State.DEFINED, State.STOPPED, action="change the screen set-up")
        if vga is not None:
            if vga not in _VGA_CHOICES:
                raise ConfigError(f"vga {vga!r} is not one of {', '.join(_VGA_CHOICES)}")
            self.vga = vga
        if tablet != "keep":
            if tablet not in ("virtio", "usb", None):
                raise ConfigError(f"tablet {tablet!r} must be 'virtio', 'usb' or None")
            self.tablet = tablet

    # -- launch hooks -----------------------------------------------------------------
    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """The display adapter and the tablet."""
        return replace(spec, vga=self.vga, tablet=self.tablet)

    def after_launch(self) -> None:
        """Open VNC if it was asked for before the start."""
        self._png_screendump = None
        if self._vnc_wanted:
            self._open_vnc()

    def teardown(self) -> None:
        """No VNC socket without QEMU."""
        self.vnc_socket = None

    def runtime(self) -> dict[str, Any]:
        """The VNC socket, if open."""
        return {"vnc": str(self.vnc_socket) if self.vnc_socket is not None else None}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """VNC as the process that started the machine left it."""
        vnc = runtime.get("vnc")
        self.vnc_socket = Path(vnc) if vnc else None
        self._vnc_wanted = self.vnc_socket is not None

    # -- VNC ------------------------------------------------------------------------
    def enable_vnc(self) -> Path:
        """Serve the screen over VNC on a unix socket; return the socket's path.

        Callable before :meth:`start_vm` (the server opens at start) or while the
        machine runs. The socket lives in the machine's run directory (mode 0700,
        socket 0600), so only its owner can connect, e.g. with
        ``vncviewer /path/vnc.sock`` or ``ssh -L`` to it. Raises
        :class:`QMPError` when QEMU refuses to open it.
        """
        self._vnc_wanted = True
        if self._vm.state in (State.RUNNING, State.PAUSED):
            return self._open_vnc()
        return self._vm.run_dir / "vnc.sock"

    def disable_vnc(self) -> None:
        """Close the VNC server (connected viewers are dropped); idempotent."""
        self._vnc_wanted = False
        if self.vnc_socket is not None and self._vm.state in (State.RUNNING, State.PAUSED):
            self._vm.qmp("display-update", {"type": "vnc", "addresses": []})
            self.vnc_socket = None
            self._vm.changed()
        self.vnc_socket = None

    def _open_vnc(self) -> Path:
        sock = self._vm.run_dir / "vnc.sock"
        self._vm.qmp("display-update", {"type": "vnc",
                                    "addresses": [{"type": "unix", "path": str(sock)}]})
        os.chmod(sock, 0o600)
        self.vnc_socket = sock
        self._vm.changed()
        self._vm.log.info("VNC on unix socket %s", sock)
        return sock

    # -- screenshots ----------------------------------------------------------------
    def screenshot(self, filename: str | Path | None = None) -> Screenshot:
        """Store a PNG of the screen in ``filename`` and return its path and size.

        Without ``filename`` the PNG goes to ``screenshot_dir`` under a fresh name.
        QEMU writes it into the machine's private run directory; it is then moved
        into place, so a reader never sees half a file.

        Raises :class:`NotFoundError` naming a missing target directory,
        :class:`ConfigError` when ``filename`` is a directory, :class:`StateError`
        unless the machine runs (or is frozen).

        Example::

            shot = m.screenshot("boot.png")
            print(shot.width, shot.height)
        """
        target = self._target(filename)
        self._vm.monitor()
        with self._dump_lock:
            if self._png_screendump is not False:
                dumped = self._try_png_dump()
                if dumped is not None:
                    size = png_size(dumped)
                    shutil.move(dumped, target)
                    return Screenshot(path=target, width=size[0], height=size[1])
            image = self._ppm_image()
        image.save(target, format="PNG")
        return Screenshot(path=target, width=image.width, height=image.height)

    def screenshot_image(self) -> Image:
        """The screen as an RGB ``PIL.Image`` in memory (needs Pillow).

        Raises :class:`HostError` when Pillow is missing, :class:`StateError`
        unless the machine runs (or is frozen).
        """
        self._vm.monitor()
        pil()
        with self._dump_lock:
            return self._ppm_image()

    def screen_size(self) -> tuple[int, int]:
        """The current ``(width, height)`` of the guest's screen in pixels.

        Measured afresh (a PPM dump's header, about 10 ms), so mode changes count.
        """
        self._vm.monitor()
        with self._dump_lock:
            path = self._dump("ppm")
            try:
                with path.open("rb") as f:
                    head = f.read(64)
            finally:
                path.unlink(missing_ok=True)
        found = _PPM_HEADER.match(head)
        if found is None:
            raise QMPError(f"{self._vm.name}: screendump wrote no PPM header", command="screendump")
        return int(found.group(1)), int(found.group(2))

    def save_region(self, filename: str | Path, x: int, y: int, width: int,
                    height: int) -> Screenshot:
        """Store a PNG of one region of the screen, e.g. as a reference for matching.

        Raises :class:`ConfigError` when the region is off the screen and
        :class:`NotFoundError` when the target directory is missing.
        """
        target = self._target(filename)
        image = self.screenshot_image()
        check_box(x, y, width, height, image.size)
        image.crop((x, y, x + width, y + height)).save(target, format="PNG")
        return Screenshot(path=target, width=width, height=height)

    def _target(self, filename: str | Path | None) -> Path:
        if filename is None:
            directory = paths.private_dir(self.screenshot_dir)
            self._shot_seq += 1
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            return directory / f"{self._vm.name}-{stamp}-{self._shot_seq:03d}.png"
        target = Path(filename)
        if target.is_dir():
            raise ConfigError(f"screenshot file name {str(target)!r} is a directory")
        parent = target.parent
        if not parent.is_dir():
            raise NotFoundError(f"cannot store screenshot {str(target)!r}: directory "
                                f"{str(parent)!r} does not exist")
        return target

    def _dump(self, fmt: str) -> Path:
        path = self._vm.run_dir / f"screendump.{fmt}"
        self._vm.qmp("screendump", {"filename": str(path), "format": fmt})
        return path

    def _try_png_dump(self) -> Path | None:
        try:
            path = self._dump("png")
        except QMPError as exc:
            text = f"{exc.description} {exc}".lower()
            if "png" not in text and "format" not in text:
                raise
            self._vm.log.info("QEMU cannot write PNG screendumps (%s); converting PPM with "
                          "Pillow", exc.description)
            self._png_screendump = False
            return None
        self._png_screendump = True
        return path

    def _ppm_image(self) -> Image:
        path = self._dump("ppm")
        try:
            image: Image = pil().open(path)
            image.load()
        finally:
            path.unlink(missing_ok=True)
        return image if image.mode == "RGB" else image.convert("RGB")
