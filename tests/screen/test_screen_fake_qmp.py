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
from vmanager.machine.base import State
from vmanager.machine.screen import Screen
from vmanager.qemu import cmdline


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buf, format=fmt)
    return buf.getvalue()


# Made while Pillow is importable: the fake QEMU must not need it.
SCREEN = {"png": _encoded("PNG"), "ppm": _encoded("PPM")}


class FakeMachine:
    """A MachineView whose QMP writes a 64x48 red screen, with or without PNG support."""

    def __init__(self, tmp: Path, *, png: bool) -> None:
        self.name = "fake"
        self.log = logging.getLogger("test.fake")
        self.state = State.RUNNING
        self.run_dir = tmp / "run"
        self.run_dir.mkdir()
        self.png = png
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    def monitor(self) -> Any:
        if self.state not in (State.RUNNING, State.PAUSED):
            raise StateError("not running", state=self.state)
        return object()

    def require(self, *states: State, action: str) -> None:
        if self.state not in states:
            raise StateError(f"cannot {action}: machine is {self.state.value}, it must be "
                             "running", state=self.state)

    def quiet(self, command: str, arguments: dict[str, Any]) -> None:
        pass

    def changed(self) -> None:
        pass

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


class FakeScreen(Screen):
    """The real Screen part on a FakeMachine."""

    def __init__(self, tmp: Path, *, png: bool) -> None:
        self.vm = FakeMachine(tmp, png=png)
        super().__init__(self.vm)
        self.screenshot_dir = tmp / "shots"
        self.run_dir = self.vm.run_dir

    @property
    def calls(self) -> list[tuple[str, dict[str, Any] | None]]:
        return self.vm.calls

    @property
    def state(self) -> State:
        return self.vm.state

    @state.setter
    def state(self, value: State) -> None:
        self.vm.state = value


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
    fake.vm.qmp = broken  # type: ignore[method-assign]
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
        spec = fake.contribute(cmdline.MachineSpec(
            qemu="qemu", name="fake", accel="tcg",
            sockets=cmdline.Sockets(qmp_fd=3, serial_fd=4, shell_fd=5, serial_log="s",
                                    pidfile="p")))
        return cmdline.display_args(vga=spec.vga, tablet=spec.tablet)

    assert argv() == ["-display", "none", "-vga", "std", "-vnc", "none",
                      "-device", "virtio-tablet-pci,id=vm-tablet"]
    fake.configure(vga="virtio", tablet="usb")
    assert argv()[3] == "virtio" and "usb-tablet,id=vm-tablet,bus=vm-xhci.0" in argv()
    fake.configure(tablet=None)
    assert not any("tablet" in a for a in argv())
    with pytest.raises(ConfigError, match="vga 'vmware9'"):
        fake.configure(vga="vmware9")
    with pytest.raises(ConfigError, match="tablet"):
        fake.configure(tablet="ps2")  # type: ignore[arg-type]
    fake.state = State.RUNNING
    with pytest.raises(StateError, match="running"):
        fake.configure(vga="std")
