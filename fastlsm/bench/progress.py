"""The progress display of ``fastlsm bench`` (stderr): one line, any terminal width, an ETA.

On a terminal the line is redrawn in place (carriage return, then the text cut to one column
less than the terminal's width and padded to it, so it never wraps and always overwrites
the previous one); the width is read again at every redraw, so resizing works. Elsewhere
(a pipe, a log file) each new case prints one plain line. The ETA weighs the work done so
far by the cases' sizes, so a few large cases late in the run do not fool it for long.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def terminal_columns(stream: TextIO, default: int = 80) -> int:
    """The width of the terminal behind ``stream`` (``default`` when it has none)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or default
    except (AttributeError, OSError, ValueError):
        return default


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """A progress line over ``total`` units of work (arbitrary weights, e.g. bytes x rounds).

    Parameters
    ----------
    total : float
        Units of work in the whole run.
    stream : text stream, optional
        Where to draw (stderr by default).
    enabled : bool
        False draws nothing.
    """

    def __init__(self, total: float, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(float(total), 1e-12)
        self.done = 0.0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._label = ""
        self._cases = 0

    def label(self, text: str) -> None:
        """Start a new case called ``text``."""
        self._label = text
        self._cases += 1
        if self.enabled and not self.tty:
            print(f"[{100 * self.done / self.total:3.0f}%] {text}", file=self.stream, flush=True)
        self._draw()

    def advance(self, units: float) -> None:
        self.done = min(self.done + units, self.total)
        self._draw()

    def eta(self) -> float | None:
        """Seconds left, from the rate so far (None before any work is done)."""
        if self.done <= 0:
            return None
        elapsed = time.perf_counter() - self.start
        return elapsed * (self.total - self.done) / self.done

    def line(self, columns: int) -> str:
        """The display text, fitted to ``columns - 1`` characters (never wraps)."""
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.start
        eta = self.eta()
        status = f"{100 * frac:3.0f}% {_duration(elapsed)} eta {_duration(eta) if eta else '?'}"
        room = columns - 1
        text = f"{status}  {self._label}"
        bar_width = min(30, room - len(text) - 3)  # the bar takes what the text leaves
        if bar_width >= 5:
            filled = int(frac * bar_width)
            text = "[" + "#" * filled + "." * (bar_width - filled) + "] " + text
        return text[:room].ljust(room)

    def _draw(self) -> None:
        if not (self.enabled and self.tty):
            return
        self.stream.write("\r" + self.line(terminal_columns(self.stream)))
        self.stream.flush()

    def close(self) -> None:
        """Erase the line (terminal) so that what follows starts at column 0."""
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * (terminal_columns(self.stream) - 1) + "\r")
            self.stream.flush()
