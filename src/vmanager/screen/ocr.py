"""Reading text off a screenshot with tesseract (run as a subprocess, argv only)."""

from __future__ import annotations

import io
import shutil
from typing import TYPE_CHECKING

from vmanager import hostcmd
from vmanager.errors import HostError
from vmanager.screen.image import pil

if TYPE_CHECKING:
    from PIL.Image import Image

#: Upscaling factor: tesseract reads the 8x16 VGA console font best at about 3x.
SCALE = 3


def prepare(image: Image) -> Image:
    """Dark text on a light background, cropped to the content and upscaled.

    Consoles draw light text on black; tesseract wants the opposite, and reads
    small bitmap fonts far better enlarged and thresholded to pure black/white.
    """
    from PIL import ImageOps, ImageStat
    gray = image.convert("L")
    if ImageStat.Stat(gray).mean[0] < 128:
        gray = ImageOps.invert(gray)
    # Crop to what is not background (white now) with a margin, to spare tesseract
    # the empty screen.
    box = ImageOps.invert(gray).getbbox()
    if box is not None:
        margin = 8
        box = (max(0, box[0] - margin), max(0, box[1] - margin),
               min(gray.width, box[2] + margin), min(gray.height, box[3] + margin))
        gray = gray.crop(box)
    big = gray.resize((gray.width * SCALE, gray.height * SCALE), pil().LANCZOS)
    return big.point(lambda v: 255 if v > 128 else 0)


def read_text(image: Image, *, tesseract: str = "tesseract", language: str = "eng",
              timeout: float = 60.0) -> str:
    """The text tesseract reads on ``image`` (after :func:`prepare`).

    Raises :class:`HostError` when tesseract is not installed and
    :class:`CommandError` (argv, status, stderr) when it fails.
    """
    binary = shutil.which(tesseract)
    if binary is None:
        raise HostError(f"OCR needs {tesseract!r}, which is not on PATH "
                        "(Debian: apt-get install tesseract-ocr)")
    buf = io.BytesIO()
    prepare(image).save(buf, format="PNG", compress_level=1)
    argv = [binary, "stdin", "stdout", "-l", language, "--psm", "6"]
    proc = hostcmd.run(argv, input=buf.getvalue(), text=False, timeout=timeout,
                       what="tesseract")
    return proc.stdout.decode(errors="replace")
