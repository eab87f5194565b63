"""Screenshot paths without a guest: a stand-in for QMP ``screendump``."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vmanager.errors import ConfigError, HostError, QMPError, StateError
from vmanager.machine.base import LaunchContext, State
from vmanager.machine.screen import ScreenMixin


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buf, format=fmt)
    return buf.getvalue()


# Made while Pillow is importable: the fake QEMU must not need it.
SCREEN = {"png": _encoded("PNG"), "ppm": _encoded("PPM")}


class FakeScreen(ScreenMixin):
    """A ScreenMixin whose QMP writes a 64x48 red screen, with or without PNG support."""

    def __init__(self, tmp: Path, *, png: bool) -> None:
        self.name = "fake"
        self.log = logging.getLogger("test.fake")
        self.state = State.RUNNING
        self.run_dir = tmp / "run"
        self.run_dir.mkdir()
        self._monitor = object()  # type: ignore[assignment]
        self.png = png
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self._init_screen()
        self.screenshot_dir = tmp / "shots"

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        self.calls.append((command, arguments))
        assert command == "screendump" and arguments is not None
        if arguments["format"] == "png" and not self.png:
            raise QMPError("QMP screendump failed: Parameter 'format' is unexpected",
                           command=command, error_class="GenericError",
                           description="Parameter 'format' is unexpected")
        Path(arguments["filename"]).write_bytes(SCREEN[arguments["format"]])
        return {}


@pytest.mark.parametrize("png", [True, False])
def test_screenshot_png_direct_or_converted_from_ppm(tmp_path: Path, png: bool) -> None:
    fake = FakeScreen(tmp_path, png=png)
    for _ in range(2):
        shot = fake.screenshot(tmp_path / "out.png")
        assert shot.size == (64, 48)
        with Image.open(shot.path) as image:
            assert image.format == "PNG" and image.getpixel((1, 1)) == (255, 0, 0)
    formats = [args["format"] for _, args in fake.calls if args]
    # Without PNG support QEMU is asked once, then PPM is used straight away.
    assert formats == (["png", "png"] if png else ["png", "ppm", "ppm"])
    assert not list(fake.run_dir.iterdir())


def test_other_screendump_errors_are_not_mistaken_for_missing_png(tmp_path: Path) -> None:
    fake = FakeScreen(tmp_path, png=True)

    def broken(command: str, arguments: dict[str, Any] | None = None, *,
               timeout: float = 60.0) -> Any:
        raise QMPError("QMP screendump failed: no surface", command=command,
                       error_class="GenericError", description="no surface")
    fake.qmp = broken  # type: ignore[method-assign]
    with pytest.raises(QMPError, match="no surface"):
        fake.screenshot(tmp_path / "out.png")


def test_without_pillow_in_memory_images_say_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeScreen(tmp_path, png=True)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(HostError, match=r"vmanager\[screen\]"):
        fake.screenshot_image()
    # A PNG screenshot to a file needs no Pillow at all.
    assert fake.screenshot(tmp_path / "ok.png").size == (64, 48)


def test_launch_adds_a_headless_display_an_idle_vnc_display_and_a_tablet(
        tmp_path: Path) -> None:
    fake = FakeScreen(tmp_path, png=True)
    fake.state = State.DEFINED

    def argv() -> list[str]:
        ctx = LaunchContext(run_dir=tmp_path, accel="tcg")
        fake._prepare_launch(ctx)
        return ctx.argv

    assert argv() == ["-display", "none", "-vga", "std", "-vnc", "none",
                      "-device", "virtio-tablet-pci,id=vm-tablet"]
    fake.configure_screen(vga="virtio", tablet="usb")
    assert argv()[3] == "virtio" and "usb-tablet,id=vm-tablet,bus=vm-xhci.0" in argv()
    fake.configure_screen(tablet=None)
    assert not any("tablet" in a for a in argv())
    with pytest.raises(ConfigError, match="vga 'vmware9'"):
        fake.configure_screen(vga="vmware9")
    with pytest.raises(ConfigError, match="tablet"):
        fake.configure_screen(tablet="ps2")  # type: ignore[arg-type]
    fake.state = State.RUNNING
    with pytest.raises(StateError, match="running"):
        fake.configure_screen(vga="std")
