"""Output helpers: tables, JSON, and a progress display for long work."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO


def emit_json(data: Any, out: TextIO | None = None) -> None:
    """Print ``data`` as indented JSON."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=out or sys.stdout)


def say(args: Any, data: dict[str, Any], text: str) -> None:
    """A command's result: ``data`` as JSON with ``--json``, else ``text`` unless ``--quiet``."""
    if args.json:
        emit_json(data)
    elif not args.quiet:
        print(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          out: TextIO | None = None) -> None:
    """Print an aligned plain-text table."""
    text = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    stream = out or sys.stdout
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
          file=stream)
    for row in text:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
              file=stream)


class Progress:
    """Steps of long work on stderr: a live spinner on a terminal, plain lines otherwise.

    ``quiet`` (``--json``/``--quiet``) shows nothing.
    """

    FRAMES = "|/-\\"

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty()

    def note(self, message: str) -> None:
        """A line of information."""
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    def callback(self) -> Callable[[str], None]:
        """A ``progress=`` callback for library calls that report steps."""
        return self.note

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Show ``message`` while the block runs, then ``ok``/``failed`` and the time."""
        if self.quiet:
            yield
            return
        t0 = time.monotonic()
        stop = threading.Event()
        spinner = None
        if self.live:
            def spin() -> None:
                i = 0
                while not stop.wait(0.1):
                    self.stream.write(f"\r{self.FRAMES[i % 4]} {message} "
                                      f"({time.monotonic() - t0:.0f} s)")
                    self.stream.flush()
                    i += 1
            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
        else:
            print(f"{message} ...", file=self.stream, flush=True)
        result = "failed"
        try:
            yield
            result = "ok"
        finally:
            stop.set()
            if spinner is not None:
                spinner.join()
                self.stream.write("\r\033[K")
            print(f"{'+' if result == 'ok' else '!'} {message}: {result} "
                  f"({time.monotonic() - t0:.1f} s)", file=self.stream, flush=True)
