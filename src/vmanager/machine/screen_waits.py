"""Reading and waiting on a Machine's screen: OCR, screen changes, reference images.

Every wait polls screenshots until its condition holds, or raises
:class:`ScreenTimeout` with the last screenshot saved for the post-mortem.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from vmanager import paths
from vmanager.errors import ScreenTimeout
from vmanager.screen import ocr
from vmanager.screen.image import (
    RegionMatch,
    check_box,
    compare_region,
    differing_pixels,
    load_reference,
)

if TYPE_CHECKING:
    import logging

    from PIL.Image import Image

Region = tuple[int, int, int, int]
T = TypeVar("T")


class ScreenWaits:
    """OCR and waits over :meth:`screenshot_image`, which the Screen part provides."""

    screenshot_dir: Path
    _shot_seq: int

    @property
    def name(self) -> str:
        """The machine's name."""
        raise NotImplementedError

    @property
    def log(self) -> logging.Logger:
        """The machine's logger."""
        raise NotImplementedError

    def screenshot_image(self) -> Image:
        """The screen now (the Screen part defines it)."""
        raise NotImplementedError

    # -- reading and waiting --------------------------------------------------------
    def get_screen_text(self, *, region: Region | None = None) -> str:
        """The text OCR (tesseract) reads on the screen, or on ``region`` (x, y, w, h).

        Raises :class:`HostError` when tesseract or Pillow is missing,
        :class:`CommandError` when tesseract fails.
        """
        return ocr.read_text(_crop(self.screenshot_image(), region))

    def wait_for_text(self, text: str | re.Pattern[str], timeout: float = 60.0, *,
                      region: Region | None = None) -> str:
        """Wait until OCR reads ``text`` on the screen; return everything it read.

        A string matches as a substring with runs of white space treated as one
        space; a compiled pattern is searched. OCR misreads small or similar
        glyphs, so wait for distinctive words. Raises :class:`ScreenTimeout`
        (with the last screenshot saved in ``screenshot_dir``) after ``timeout``
        seconds.

        Example::

            m.wait_for_text("login:", timeout=120)
        """
        wanted = _normalise(text) if isinstance(text, str) else None
        last: Image | None = None

        def attempt() -> str | None:
            nonlocal last
            last = self.screenshot_image()
            read = ocr.read_text(_crop(last, region))
            if wanted is not None:
                return read if wanted in _normalise(read) else None
            assert isinstance(text, re.Pattern)
            return read if text.search(read) else None

        return self._poll(attempt, timeout, interval=0.2, what=f"text {text!r}",
                          last=lambda: last)

    def wait_for_screen_change(self, timeout: float = 30.0, *, since: Image | None = None,
                               region: Region | None = None, min_changed: int = 64,
                               interval: float = 0.1) -> Image:
        """Wait until the screen differs from ``since`` (default: the screen now).

        Changes of fewer than ``min_changed`` pixels, such as a blinking text
        cursor, do not count. Returns the changed screen. Raises
        :class:`ScreenTimeout` with the last screenshot saved.
        """
        before = _crop(since if since is not None else self.screenshot_image(), region)
        last: Image | None = None

        def attempt() -> Image | None:
            nonlocal last
            last = self.screenshot_image()
            now = _crop(last, region)
            if now.size != before.size:
                return last
            if differing_pixels(now, before, pixel_threshold=0) >= min_changed:
                return last
            return None

        return self._poll(attempt, timeout, interval=interval, what="a screen change",
                          last=lambda: last)

    def match_region(self, reference: str | Path | Image, x: int, y: int, *,
                     tolerance: float = 0.01, pixel_threshold: int = 32) -> RegionMatch:
        """Compare the screen at ``(x, y)`` with a reference image (a PNG or an Image).

        The region matches when at most ``tolerance`` (a fraction) of its pixels
        differ by more than ``pixel_threshold`` in any colour channel. The result
        is truthy when it matched. Raises :class:`NotFoundError` for a missing
        reference, :class:`ConfigError` when the region is off the screen.
        """
        ref = load_reference(reference)
        return compare_region(self.screenshot_image(), ref, x, y, tolerance=tolerance,
                              pixel_threshold=pixel_threshold)

    def wait_for_image(self, reference: str | Path | Image, x: int, y: int, *,
                       timeout: float = 30.0, tolerance: float = 0.01,
                       pixel_threshold: int = 32) -> RegionMatch:
        """Wait until :meth:`match_region` matches; return the match.

        Raises :class:`ScreenTimeout` (last screenshot saved, best difference in
        the message) after ``timeout`` seconds, and what :meth:`match_region`
        raises.
        """
        ref = load_reference(reference)
        last: Image | None = None
        best = 1.0

        def attempt() -> RegionMatch | None:
            nonlocal last, best
            last = self.screenshot_image()
            result = compare_region(last, ref, x, y, tolerance=tolerance,
                                    pixel_threshold=pixel_threshold)
            best = min(best, result.difference)
            return result if result.matched else None

        name = reference if isinstance(reference, str | Path) else "the reference image"
        return self._poll(attempt, timeout, interval=0.1,
                          what=lambda: f"{name} at ({x}, {y}) (closest: {best:.1%} of "
                                       f"pixels differed, tolerance {tolerance:.1%})",
                          last=lambda: last)

    def _poll(self, attempt: Callable[[], T | None], timeout: float, *, interval: float,
              what: str | Callable[[], str], last: Callable[[], Image | None]) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = attempt()
            if found is not None:
                return found
            if time.monotonic() + interval > deadline:
                desc = what() if callable(what) else what
                raise ScreenTimeout(f"{self.name}: {desc} did not come on screen within "
                                    f"{timeout} s", screenshot=self._save_failure(last()))
            time.sleep(interval)

    def _save_failure(self, image: Image | None) -> str | None:
        if image is None:
            return None
        try:
            directory = paths.private_dir(self.screenshot_dir)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self._shot_seq += 1
            path = directory / f"{self.name}-timeout-{stamp}-{self._shot_seq:03d}.png"
            image.save(path, format="PNG")
        except OSError as exc:
            self.log.warning("could not save the screenshot of a failed wait: %s", exc)
            return None
        return str(path)



def _crop(image: Image, region: Region | None) -> Image:
    if region is None:
        return image
    x, y, w, h = region
    check_box(x, y, w, h, image.size)
    return image.crop((x, y, x + w, y + h))


def _normalise(text: str) -> str:
    return " ".join(text.split())
