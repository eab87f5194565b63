"""Screen, keyboard and mouse on a real tiny guest: every effect is read back inside it."""

from __future__ import annotations

import base64
import os
import re
import socket
import stat
import string
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from vmanager import Machine
from vmanager.errors import ConfigError, NotFoundError, ScreenTimeout
from vmanager.screen import ABS_MAX, abs_axis

pytestmark = pytest.mark.guest

EV_KEY, EV_ABS = 1, 3
ABS_X, ABS_Y = 0, 1
BTN_LEFT, BTN_RIGHT, BTN_MIDDLE = 0x110, 0x111, 0x112


@pytest.fixture(scope="module")
def m(shared_machine: Machine) -> Machine:
    # A steady screen: no blinking cursor to tell apart from real changes.
    shared_machine.succeed("echo 0 > /sys/class/graphics/fbcon/cursor_blink")
    return shared_machine


def fresh_tty1(m: Machine) -> None:
    """tty1 in front, no half-typed line or running command, screen cleared."""
    m.succeed("chvt 1")
    m.send_key("ctrl-c")
    time.sleep(0.2)
    m.succeed("clear > /dev/tty1")


def guest_resolution(m: Machine) -> tuple[int, int]:
    width, height = m.succeed("cat /sys/class/graphics/fb0/virtual_size").strip().split(",")
    return int(width), int(height)


# -- screenshots --------------------------------------------------------------------------
def test_screenshot_is_a_png_of_the_guest_resolution_and_not_blank(m: Machine,
                                                                   tmp_path: Path) -> None:
    fresh_tty1(m)
    m.succeed("echo SCREENSHOT-TEST > /dev/tty1")
    started = time.monotonic()
    shot = m.screenshot(tmp_path / "screen.png")
    elapsed = time.monotonic() - started
    assert shot.path == tmp_path / "screen.png"
    assert shot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.size == guest_resolution(m) == m.screen_size()
    with Image.open(shot.path) as image:
        assert image.format == "PNG" and image.size == shot.size
        assert sum(image.convert("L").histogram()[129:]) > 0  # some bright text on black
    assert elapsed < 2.0
    # Nothing stays behind in the run directory.
    assert not list(m.run_dir.glob("screendump.*"))


def test_screenshot_without_a_name_goes_to_the_screenshot_dir(m: Machine) -> None:
    shot = m.screenshot()
    assert shot.path.parent == m.screenshot_dir and shot.path.is_file()
    shot.path.unlink()


def test_screenshot_into_a_missing_directory_names_it(m: Machine, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(NotFoundError, match=re.escape(str(missing))):
        m.screenshot(missing / "x.png")


# -- keyboard -----------------------------------------------------------------------------
def test_typed_text_runs_a_command_on_the_vga_console(m: Machine) -> None:
    fresh_tty1(m)
    before = m.screenshot_image()
    m.type_text("echo typed-on-$(tty) $((6*7)) > /tmp/typed\n")
    # The redirection makes the file before echo writes: wait for content.
    out = m.wait_until_succeeds("grep -q . /tmp/typed && cat /tmp/typed", timeout=30)
    assert out == "typed-on-/dev/tty1 42\n"
    after = m.screenshot_image()
    assert before.tobytes() != after.tobytes()


def test_every_printable_character_arrives_with_the_right_shift(m: Machine) -> None:
    fresh_tty1(m)
    line = string.ascii_letters + string.digits + string.punctuation + " "
    m.type_text("cat > /tmp/chars\n")
    m.type_text(line + "\n")
    m.send_key("ctrl-d")
    out = m.wait_until_succeeds("grep -q . /tmp/chars && cat /tmp/chars", timeout=30)
    assert out == line + "\n"


def test_untypeable_text_is_refused_before_anything_is_typed(m: Machine) -> None:
    with pytest.raises(ConfigError, match="'é'"):
        m.type_text("abc é")


def test_unknown_key_name_lists_the_valid_ones(m: Machine) -> None:
    with pytest.raises(ConfigError, match=r"'nokey'.*valid key names are: .*ctrl"):
        m.send_key("ctrl-nokey")


def test_ctrl_alt_f2_switches_the_active_vt(m: Machine) -> None:
    m.succeed("chvt 1")
    m.send_key("ctrl-alt-f2")
    m.wait_until_succeeds("grep -qx tty2 /sys/class/tty/tty0/active", timeout=10)
    m.send(b"ctrl-alt-f1")  # the seed's spelling
    m.wait_until_succeeds("grep -qx tty1 /sys/class/tty/tty0/active", timeout=10)


# -- waiting for the screen ---------------------------------------------------------------
def test_wait_for_text_reads_what_the_guest_printed(m: Machine) -> None:
    fresh_tty1(m)
    m.succeed("(sleep 1; echo; echo '  VMANAGER SEES THIS TEXT' > /dev/tty1) "
              ">/dev/null 2>&1 &")
    read = m.wait_for_text("SEES THIS TEXT", timeout=60)
    assert "MANAGER SEES THIS TEXT" in read  # OCR may take the V for a U
    assert m.wait_for_text(re.compile(r"SEES\s+TH[I1l]S"), timeout=10)


def test_wait_for_text_times_out_with_the_screenshot_saved(m: Machine) -> None:
    fresh_tty1(m)
    with pytest.raises(ScreenTimeout) as info:
        m.wait_for_text("NEVER-ON-SCREEN", timeout=1)
    assert info.value.screenshot is not None
    saved = Path(info.value.screenshot)
    assert saved.is_file() and saved.parent == m.screenshot_dir
    assert str(saved) in str(info.value)
    with Image.open(saved) as image:
        assert image.size == guest_resolution(m)
    saved.unlink()


def test_wait_for_screen_change(m: Machine) -> None:
    fresh_tty1(m)
    time.sleep(0.3)
    with pytest.raises(ScreenTimeout):
        m.wait_for_screen_change(timeout=1)  # a still screen (cursor does not blink)
    m.succeed("(sleep 1; echo SOMETHING NEW > /dev/tty1) >/dev/null 2>&1 &")
    started = time.monotonic()
    m.wait_for_screen_change(timeout=30)
    assert time.monotonic() - started > 0.5


def test_region_matching_accepts_the_saved_region_and_rejects_another(m: Machine,
                                                                      tmp_path: Path) -> None:
    fresh_tty1(m)
    m.succeed("echo REGION-ALPHA > /dev/tty1")
    ref = m.save_region(tmp_path / "needle.png", 0, 0, 200, 32)
    assert ref.size == (200, 32)
    hit = m.match_region(ref.path, 0, 0)
    assert hit.matched and hit.difference == 0.0
    assert m.wait_for_image(ref.path, 0, 0, timeout=5)

    fresh_tty1(m)
    m.succeed("echo REGION-OMEGA > /dev/tty1")
    miss = m.match_region(ref.path, 0, 0)
    assert not miss.matched and miss.difference > 0.01
    with pytest.raises(ScreenTimeout, match=r"needle\.png") as info:
        m.wait_for_image(ref.path, 0, 0, timeout=1)
    assert info.value.screenshot is not None
    Path(info.value.screenshot).unlink()
    # The same text elsewhere on screen does not match at the saved place either.
    with pytest.raises(ConfigError, match="outside"):
        m.match_region(ref.path, 1200, 0)


# -- mouse --------------------------------------------------------------------------------
class EventReader:
    """Collects a guest input device's events (struct input_event, 24 bytes on x86_64)."""

    def __init__(self, m: Machine, device: str) -> None:
        self.m = m
        self.pid = m.succeed(f"cat {device} > /tmp/ev 2>/dev/null </dev/null & echo $!").strip()
        m.wait_until_succeeds(f"ls -l /proc/{self.pid}/fd | grep -q {device}", timeout=10)

    def stop(self) -> list[tuple[int, int, int]]:
        time.sleep(0.3)
        self.m.succeed(f"kill {self.pid}; sleep 0.1")
        data = base64.b64decode(self.m.succeed("base64 /tmp/ev; rm -f /tmp/ev"))
        events = []
        for offset in range(0, len(data) - len(data) % 24, 24):
            _sec, _usec, etype, code, value = struct.unpack("<qqHHi", data[offset:offset + 24])
            if etype in (EV_KEY, EV_ABS):
                events.append((etype, code, value))
        return events


@pytest.fixture
def tablet_events(m: Machine) -> Iterator[str]:
    devices = m.succeed("cat /proc/bus/input/devices")
    found = re.search(r'N: Name="QEMU Virtio Tablet".*?H: Handlers=.*?(event\d+)', devices,
                      re.S)
    assert found, devices
    yield f"/dev/input/{found.group(1)}"


def test_mouse_moves_and_clicks_arrive_as_absolute_events(m: Machine,
                                                          tablet_events: str) -> None:
    width, height = guest_resolution(m)
    reader = EventReader(m, tablet_events)
    m.mouse_move(100, 200)
    m.mouse_click(3)
    m.mouse_click("left", x=width - 1, y=height - 1, double=True)
    events = reader.stop()

    assert events[:2] == [(EV_ABS, ABS_X, abs_axis(100, width)),
                          (EV_ABS, ABS_Y, abs_axis(200, height))]
    # The guest maps the value back onto the same pixel.
    assert events[0][2] * width // (ABS_MAX + 1) == 100
    assert events[1][2] * height // (ABS_MAX + 1) == 200
    assert events[2:4] == [(EV_KEY, BTN_RIGHT, 1), (EV_KEY, BTN_RIGHT, 0)]
    assert events[4:6] == [(EV_ABS, ABS_X, abs_axis(width - 1, width)),
                           (EV_ABS, ABS_Y, abs_axis(height - 1, height))]
    assert events[6:] == [(EV_KEY, BTN_LEFT, 1), (EV_KEY, BTN_LEFT, 0)] * 2
    assert m.mouse_position == (width - 1, height - 1)


def test_mouse_drag_holds_the_button_along_the_way(m: Machine, tablet_events: str) -> None:
    width, height = guest_resolution(m)
    reader = EventReader(m, tablet_events)
    m.mouse_drag(10, 10, 110, 60, button="middle", steps=4)
    events = reader.stop()
    down = events.index((EV_KEY, BTN_MIDDLE, 1))
    assert events[-1] == (EV_KEY, BTN_MIDDLE, 0)
    xs = [v for t, c, v in events[down:] if (t, c) == (EV_ABS, ABS_X)]
    assert xs == [abs_axis(x, width) for x in (35, 60, 85, 110)]
    assert events[:down][-1] == (EV_ABS, ABS_Y, abs_axis(10, height))


@pytest.mark.parametrize(("x", "y"), [(-1, 0), (0, -1), (5000, 10), (10, 5000)])
def test_mouse_outside_the_screen_is_refused(m: Machine, x: int, y: int) -> None:
    with pytest.raises(ConfigError, match=r"outside the \d+x\d+ screen"):
        m.mouse_move(x, y)


def test_unknown_mouse_button_is_refused(m: Machine) -> None:
    with pytest.raises(ConfigError, match="unknown mouse button"):
        m.mouse_click(7)


# -- VNC ----------------------------------------------------------------------------------
def test_vnc_on_a_private_unix_socket_only_when_asked(m: Machine) -> None:
    assert m.vnc_socket is None
    assert not (m.run_dir / "vnc.sock").exists()
    path = m.enable_vnc()
    try:
        assert path == m.vnc_socket and path.parent == m.run_dir
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            assert s.recv(12).startswith(b"RFB ")
    finally:
        m.disable_vnc()
    assert m.vnc_socket is None and not path.exists()
