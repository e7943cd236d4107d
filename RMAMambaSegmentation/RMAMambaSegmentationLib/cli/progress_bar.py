"""A plain-text progress bar for the command line: a progress callback ``(fraction, message)`` drawing on stderr.

On a terminal the bar is redrawn in place (at most 10 times a second); elsewhere (a log file, a cluster job's
output) one line is written per 10 % step and per case, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 28
_REDRAW_SECONDS = 0.1
_LOG_STEP = 0.1


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ConsoleProgress:
    """Callable progress reporter: ``bar(0.42, "case 2/5 ct: slices 12/30")``; call :meth:`close` at the end."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty()) if interactive is None else interactive
        self.started = time.monotonic()
        self._last_draw = -1.0
        self._last_logged_step = -1
        self._last_prefix = ""
        self._line_open = False

    def text(self, fraction: float, message: str) -> str:
        """The bar's line for ``fraction`` in [0, 1]: bar, percentage, elapsed time, estimate, message."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        filled = round(fraction * BAR_WIDTH)
        elapsed = time.monotonic() - self.started
        eta = f" eta {_duration(elapsed * (1 - fraction) / fraction)}" if 0.0 < fraction < 1.0 else ""
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return f"[{bar}] {fraction * 100:5.1f}% {_duration(elapsed)}{eta} {message}"

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if self.interactive:
            if fraction < 1.0 and now - self._last_draw < _REDRAW_SECONDS:
                return
            self._last_draw = now
            self.stream.write("\r\x1b[K" + self.text(fraction, message))
            self._line_open = True
        else:
            step = int(fraction / _LOG_STEP + 1e-9)
            prefix = message.split(":", 1)[0]
            if step == self._last_logged_step and prefix == self._last_prefix:
                return
            self._last_logged_step, self._last_prefix = step, prefix
            self.stream.write(self.text(fraction, message) + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """End the in-place line so that another message can be written cleanly."""
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False

    def close(self) -> None:
        self.clear()
