"""A console's bounded history: raw bytes and their text, appended in linear time.

A guest decides how much it prints, so nothing here grows without limit: the
oldest output is forgotten once more than ``limit`` bytes (and characters)
are held. Text is decoded incrementally (a multi-byte character split across
two reads decodes whole; an invalid byte becomes U+FFFD and costs exactly
itself), so positions in the text never need re-encoding, and appending a
chunk costs the chunk, not the history.
"""

from __future__ import annotations

import codecs
from typing import Final

#: Default bound of a console's history in memory (bytes, and characters of text).
DEFAULT_LIMIT: Final = 4 << 20
#: How much of a console's end an error message carries.
ERROR_TAIL: Final = 4096


class History:
    """Output kept as bytes and as text, each bounded to about ``limit``.

    Offsets are absolute: :attr:`received` counts every byte ever appended and
    :attr:`text_end` every character, so a position taken earlier stays valid
    (or is known to be forgotten) after old output is dropped.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1024:
            raise ValueError("a console history holds at least 1 KiB")
        self.limit = limit
        self._bytes = bytearray()
        self._bytes_base = 0          # absolute offset of _bytes[0]
        self._text: list[str] = []    # pending pieces, joined lazily
        self._joined = ""
        self._text_base = 0           # absolute offset of _joined[0]
        self._text_len = 0            # len(_joined) + pending pieces
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    # -- appending ----------------------------------------------------------------
    def append(self, data: bytes) -> None:
        """Add output; forget the oldest when over the limit (in batches: amortised O(1))."""
        self._bytes += data
        if len(self._bytes) > self.limit + self.limit // 4:
            cut = len(self._bytes) - self.limit
            del self._bytes[:cut]
            self._bytes_base += cut
        text = self._decoder.decode(data)
        if text:
            self._text.append(text)
            self._text_len += len(text)
            if self._text_len > self.limit + self.limit // 4:
                joined = self._join()
                cut = len(joined) - self.limit
                self._joined = joined[cut:]
                self._text_base += cut
                self._text_len = len(self._joined)

    def end_of_input(self) -> None:
        """Decode what is pending of a split character (the stream it came from ended)."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        if text:
            self._text.append(text)
            self._text_len += len(text)

    def _join(self) -> str:
        if self._text:
            self._joined = "".join([self._joined, *self._text])
            self._text = []
        return self._joined

    # -- reading ------------------------------------------------------------------
    @property
    def received(self) -> int:
        """Bytes appended so far (absolute end offset)."""
        return self._bytes_base + len(self._bytes)

    @property
    def text_end(self) -> int:
        """Characters decoded so far (absolute end offset of the text)."""
        return self._text_base + self._text_len

    @property
    def text_start(self) -> int:
        """Absolute offset of the oldest character still held."""
        return self._text_base

    def bytes_since(self, offset: int = 0) -> bytes:
        """Bytes from absolute ``offset`` on (what is still held of them)."""
        start = max(0, offset - self._bytes_base)
        return bytes(self._bytes[start:])

    def text_since(self, offset: int = 0) -> str:
        """Text from absolute character ``offset`` on (what is still held of it)."""
        joined = self._join()
        return joined[max(0, offset - self._text_base):]

    def tail(self, chars: int = ERROR_TAIL) -> str:
        """The last ``chars`` characters (for error messages)."""
        return self._join()[-chars:]

    def forget_before(self, offset: int) -> None:
        """Drop text (and the bytes) before absolute character ``offset``."""
        joined = self._join()
        cut = max(0, min(offset - self._text_base, len(joined)))
        if cut:
            self._joined = joined[cut:]
            self._text_base += cut
            self._text_len = len(self._joined)
            # bytes: keep no more than the text needs (cheap upper bound)
            excess = len(self._bytes) - 4 * self._text_len
            if excess > 0:
                del self._bytes[:excess]
                self._bytes_base += excess
