"""A one-line progress bar on stderr: rows done, rows/s, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 24


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Rows scored so far out of ``total``, redrawn in place at most every ``interval`` seconds.

    Parameters
    ----------
    total : rows expected (the dataset's row count, read from the Parquet footers)
    stream : where to draw (default ``sys.stderr``)
    enabled : False draws nothing (``--quiet``)
    interval : minimum seconds between redraws; redrawing a terminal line is not free
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.2,
    ) -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.start = time.perf_counter()
        self._last_draw = -float("inf")
        self._drawn = False

    def update(self, rows: int) -> None:
        """Count ``rows`` more rows as done; redraw if the last redraw is old enough."""
        self.done += rows
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(now)

    def restart(self) -> None:
        """Count rates (and so the ETA) from now: after a one-time wait before the first rows."""
        self.start = time.perf_counter()

    def message(self, text: str) -> None:
        """Write ``text`` on a line of its own (nothing if disabled); a drawn bar goes on below."""
        if not self.enabled:
            return
        self.stream.write(("\n" if self._drawn else "") + text + "\n")
        if self._drawn:
            self._draw(time.perf_counter())
        else:
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The text of the bar at time ``now``."""
        elapsed = (now if now is not None else time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        return f"[{bar}] {self.done:,}/{self.total:,} rows  {rate:,.0f} rows/s  ETA {eta}"

    def _draw(self, now: float) -> None:
        # \r plus clear-to-end-of-line: a shorter line does not leave old characters behind.
        self.stream.write("\r" + self.line(now) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (nothing if the bar was never drawn)."""
        if self.enabled and self._drawn:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
