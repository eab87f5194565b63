"""Screenshot results, PNG headers, Pillow loading and region comparison."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager.errors import ConfigError, HostError, NotFoundError

if TYPE_CHECKING:
    from PIL.Image import Image

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Screenshot:
    """A stored screenshot: where it is and its size in pixels."""

    path: Path
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return (self.width, self.height)


@dataclass(frozen=True)
class RegionMatch:
    """How a screen region compared with a reference image.

    ``difference`` is the fraction of the region's pixels whose colour differs
    by more than the pixel threshold; ``matched`` is ``difference <= tolerance``.
    """

    matched: bool
    difference: float
    x: int
    y: int
    width: int
    height: int

    def __bool__(self) -> bool:
        return self.matched


def pil() -> Any:
    """The ``PIL.Image`` module; raises :class:`HostError` saying how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise HostError("Pillow is needed for in-memory screenshots, OCR and image "
                        "matching: pip install 'vmanager[screen]'") from exc
    return Image


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (no decoding, no Pillow).

    Raises :class:`ConfigError` when the file is not a PNG.
    """
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_MAGIC or head[12:16] != b"IHDR":
        raise ConfigError(f"{str(path)!r} is not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def load_reference(reference: str | Path | Image) -> Image:
    """An RGB image from a path or an image. Raises :class:`NotFoundError`."""
    if isinstance(reference, str | Path):
        path = Path(reference)
        if not path.is_file():
            raise NotFoundError(f"reference image {str(path)!r} does not exist")
        image: Image = pil().open(path)
    else:
        image = reference
    return image if image.mode == "RGB" else image.convert("RGB")


def check_box(x: int, y: int, width: int, height: int, screen: tuple[int, int]) -> None:
    """Raise :class:`ConfigError` unless the box lies on a screen of size ``screen``."""
    for what, value in (("x", x), ("y", y), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{what} must be a whole number of pixels, got {value!r}")
    if width <= 0 or height <= 0:
        raise ConfigError(f"a region of {width}x{height} pixels is empty")
    sw, sh = screen
    if x < 0 or y < 0 or x + width > sw or y + height > sh:
        raise ConfigError(f"region {width}x{height} at ({x}, {y}) is outside the "
                          f"{sw}x{sh} screen")


def differing_pixels(a: Image, b: Image, *, pixel_threshold: int) -> int:
    """How many pixels of two same-size RGB images differ by more than the threshold.

    A pixel differs when any colour channel differs by more than
    ``pixel_threshold`` (0..255). Runs in Pillow's C code.
    """
    from PIL import ImageChops
    diff = ImageChops.difference(a, b)
    r, g, b_ = diff.split()
    worst = ImageChops.lighter(ImageChops.lighter(r, g), b_)
    histogram = worst.histogram()
    return int(sum(histogram[pixel_threshold + 1:]))


def compare_region(screen: Image, reference: Image, x: int, y: int, *,
                   tolerance: float, pixel_threshold: int) -> RegionMatch:
    """Compare ``reference`` with the part of ``screen`` at ``(x, y)``.

    Raises :class:`ConfigError` when the region is off the screen or the
    tolerance/threshold are out of range.
    """
    if not 0.0 <= tolerance <= 1.0:
        raise ConfigError(f"tolerance {tolerance!r} must be a fraction from 0 to 1")
    if not 0 <= pixel_threshold <= 255:
        raise ConfigError(f"pixel_threshold {pixel_threshold!r} must be from 0 to 255")
    w, h = reference.size
    check_box(x, y, w, h, screen.size)
    part = screen.crop((x, y, x + w, y + h))
    if part.mode != "RGB":
        part = part.convert("RGB")
    fraction = differing_pixels(part, reference, pixel_threshold=pixel_threshold) / (w * h)
    return RegionMatch(matched=fraction <= tolerance, difference=fraction, x=x, y=y,
                       width=w, height=h)
