"""Fast tests of the screen helpers: key map, pointer scaling, image comparison, OCR prep."""

from __future__ import annotations

import string
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from vmanager.errors import ConfigError, NotFoundError
from vmanager.screen import ABS_MAX, abs_axis, button_name, keys, keys_for_text
from vmanager.screen.image import compare_region, load_reference, png_size
from vmanager.screen.ocr import prepare

PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " \n\t"


# -- key map ----------------------------------------------------------------------------
def test_every_printable_ascii_character_maps_to_valid_qemu_keys() -> None:
    for ch in PRINTABLE:
        (presses,) = keys_for_text(ch)
        assert all(k in keys.QKEYCODES for k in presses), ch
        assert 1 <= len(presses) <= 2


@pytest.mark.parametrize(("ch", "expected"), [
    ("a", ("a",)), ("A", ("shift", "a")), ("1", ("1",)), ("!", ("shift", "1")),
    ("@", ("shift", "2")), ("-", ("minus",)), ("_", ("shift", "minus")), ("=", ("equal",)),
    ("+", ("shift", "equal")), ("'", ("apostrophe",)), ('"', ("shift", "apostrophe")),
    ("`", ("grave_accent",)), ("~", ("shift", "grave_accent")), ("\\", ("backslash",)),
    ("|", ("shift", "backslash")), (" ", ("spc",)), ("\n", ("ret",)), ("\t", ("tab",)),
    ("<", ("shift", "comma")), ("?", ("shift", "slash")), (":", ("shift", "semicolon")),
    ("{", ("shift", "bracket_left")), ("}", ("shift", "bracket_right")),
])
def test_us_layout_shift_handling(ch: str, expected: tuple[str, ...]) -> None:
    assert keys_for_text(ch) == [expected]


def test_shift_only_for_upper_case_and_shifted_symbols() -> None:
    for ch in PRINTABLE:
        shifted = keys_for_text(ch)[0][0] == "shift"
        assert shifted == (ch.isupper() or ch in '~!@#$%^&*()_+{}|:"<>?'), ch


def test_untypeable_characters_are_all_named_before_typing() -> None:
    with pytest.raises(ConfigError) as info:
        keys_for_text("ok é and \x07 and ü")
    message = str(info.value)
    for ch in ("'é'", "'\\x07'", "'ü'"):
        assert ch in message
    assert "'o'" not in message


def test_unknown_key_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown key name .foo.; valid key names are: .*ctrl"):
        keys.parse_combo("ctrl-alt-foo")


# -- pointer ----------------------------------------------------------------------------
@given(st.integers(1, 8192).flatmap(lambda size: st.tuples(st.just(size),
                                                             st.integers(0, size - 1))))
def test_abs_axis_round_trips_through_the_guest_mapping(case: tuple[int, int]) -> None:
    size, pixel = case
    value = abs_axis(pixel, size)
    assert 0 <= value <= ABS_MAX
    # libinput / evdev users: value * size / (max + 1), truncated.
    assert value * size // (ABS_MAX + 1) == pixel


@given(st.integers(2, 4096))
def test_abs_axis_is_monotonic_and_spans_the_range(size: int) -> None:
    values = [abs_axis(p, size) for p in range(size)]
    assert values == sorted(values)
    assert values[0] < ABS_MAX // size + 1
    assert values[-1] > ABS_MAX - ABS_MAX // size - 1


@pytest.mark.parametrize("pixel", [-1, 1280, 5000, 1.5, True])
def test_abs_axis_rejects_points_off_the_screen(pixel: object) -> None:
    with pytest.raises(ConfigError, match="outside the screen"):
        abs_axis(pixel, 1280)  # type: ignore[arg-type]


def test_button_names() -> None:
    assert [button_name(b) for b in (1, 2, 3)] == ["left", "middle", "right"]
    assert button_name("Right") == "right"
    with pytest.raises(ConfigError, match="left"):
        button_name(9)
    with pytest.raises(ConfigError):
        button_name(True)


# -- images -----------------------------------------------------------------------------
def _png(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    raw = b"".join(b"\0" + b"\0" * (3 * width) for _ in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_png_size_reads_the_header_only(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 33, 7)
    assert png_size(tmp_path / "a.png") == (33, 7)
    assert Image.open(tmp_path / "a.png").size == (33, 7)
    (tmp_path / "b.png").write_bytes(b"P6\n1 1\n255\n\0\0\0")
    with pytest.raises(ConfigError, match="not a PNG"):
        png_size(tmp_path / "b.png")


def _screen_with(text: str) -> Image.Image:
    image = Image.new("RGB", (200, 100))
    ImageDraw.Draw(image).text((20, 40), text, fill=(255, 255, 255))
    return image


def test_region_matches_itself_and_rejects_other_content() -> None:
    screen = _screen_with("HELLO")
    ref = screen.crop((10, 30, 110, 60))
    assert compare_region(screen, ref, 10, 30, tolerance=0.01, pixel_threshold=32)
    other = _screen_with("WORLD")
    result = compare_region(other, ref, 10, 30, tolerance=0.01, pixel_threshold=32)
    assert not result.matched and result.difference > 0.01
    # A slightly noisy copy still matches within the pixel threshold.
    noisy = screen.point(lambda v: min(255, v + 10))
    assert compare_region(noisy, ref, 10, 30, tolerance=0.0, pixel_threshold=32)


def test_region_off_the_screen_is_a_config_error() -> None:
    screen = _screen_with("x")
    with pytest.raises(ConfigError, match="outside the 200x100 screen"):
        compare_region(screen, screen.crop((0, 0, 50, 50)), 180, 10, tolerance=0.01,
                       pixel_threshold=32)


def test_missing_reference_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.png"):
        load_reference(tmp_path / "nope.png")


def test_ocr_preparation_makes_dark_text_on_white_and_crops() -> None:
    prepared = prepare(_screen_with("HELLO"))
    assert prepared.mode == "L"
    # Mostly white background, some black text; much smaller than 3x the screen.
    histogram = prepared.histogram()
    assert histogram[255] > histogram[0] > 0
    assert prepared.width < 200 * 3
