"""The one progress bar of gmlib: plain text on stdout, standard library only.

Notebook widgets would pull JavaScript from a CDN into the built book, and
nbgrader counts anything written to stderr in a graded cell as a failure, so
every loop in gmlib (training epochs, EM iterations) shows this bar instead::

    training:  45%|##########            | 45/100 [00:02<00:03, loss=0.132]

It redraws its line (a carriage return, as a terminal and Jupyter both honour) at most
every half second, and ends it with a newline when the loop ends or is left.
"""
from __future__ import annotations

import sys
import time
from typing import Iterator, Mapping

__all__ = ["progress_bar", "ProgressBar"]

WIDTH = 88  # characters of the whole line
INTERVAL = 0.5  # seconds between redraws


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """A text bar over ``range(n)``: iterate over it; :meth:`set_postfix` adds ``key=value`` pairs to
    the line; :meth:`close` ends the line (called when the loop ends). Silent unless ``enabled``."""

    def __init__(self, n: int, desc: str | None = None, enabled: bool = True, file=None):
        self.n_total = int(n)
        self.desc = desc
        self.enabled = enabled
        self.file = file
        self.n = 0
        self.postfix = ""
        self._start = self._last = 0.0
        self._closed = False

    def __iter__(self) -> Iterator[int]:
        self._start = time.monotonic()
        self._last = -INTERVAL
        try:
            for i in range(self.n_total):
                self._draw(force=i == 0)
                yield i
                self.n = i + 1
        finally:
            self.close()

    def set_postfix(self, values: Mapping[str, object] | None = None, refresh: bool = True, **more: object) -> None:
        items = {**(values or {}), **more}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())
        if refresh:
            self._draw(force=True)

    def line(self) -> str:
        """The bar's text now (without the carriage return)."""
        elapsed = time.monotonic() - self._start if self._start else 0.0
        total = max(self.n_total, 1)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        left = (self.n_total - self.n) / rate if rate > 0 else 0.0
        tail = f"| {self.n}/{self.n_total} [{_clock(elapsed)}<{_clock(left)}" \
               + (f", {self.postfix}" if self.postfix else "") + "]"
        head = f"{self.desc}: " if self.desc else ""
        head += f"{100 * self.n // total:3d}%|"
        room = max(WIDTH - len(head) - len(tail), 10)
        filled = room * self.n // total
        return head + "#" * filled + " " * (room - filled) + tail

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        if force or now - self._last >= INTERVAL:
            self._last = now
            out = self.file or sys.stdout
            out.write("\r" + self.line())
            out.flush()

    def close(self) -> None:
        """Draw the final state and end the line (once)."""
        if self._closed:
            return
        self._draw(force=True)
        self._closed = True
        if self.enabled:
            out = self.file or sys.stdout
            out.write("\n")
            out.flush()


def progress_bar(n: int, desc: str | None, enabled: bool) -> ProgressBar:
    """A text bar over ``range(n)`` on stdout; silent unless ``enabled``."""
    return ProgressBar(n, desc, enabled)
