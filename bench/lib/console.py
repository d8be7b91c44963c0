"""Console output of long runs: say() a line, durations as 1m05s, one live status line on a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable


class StatusLine:
    """The one line a run rewrites in place on a terminal (a countdown, rows filled); say() clears it."""

    tty = sys.stdout.isatty()
    shown = False

    @classmethod
    def show(cls, text: str) -> None:
        if cls.tty:
            sys.stdout.write("\r\033[K" + text)
            sys.stdout.flush()
            cls.shown = True

    @classmethod
    def clear(cls) -> None:
        if cls.tty and cls.shown:
            sys.stdout.write("\r\033[K")
            cls.shown = False


def say(message: str = "") -> None:
    """Print one line now (clearing the status line); a closed stdout (``| head``) stops nothing."""
    with contextlib.suppress(OSError):
        StatusLine.clear()
        print(message, flush=True)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """The steps of a planned run: each announced with roughly how long is left, then counted down."""

    def __init__(self, planned_seconds: float) -> None:
        self.left = planned_seconds

    def step(self, label: str, seconds: float) -> Callable[[float], None]:
        """Announce a step of ``seconds`` planned; returns a ticker for the live countdown."""
        say(f"  {label:<46} ({fmt_duration(self.left)} left)")
        left_at_start = self.left
        self.left = max(0.0, self.left - seconds)

        def tick(elapsed: float) -> None:
            remaining = max(0.0, left_at_start - elapsed)
            StatusLine.show(f"    running {elapsed:4.0f}s ... about {fmt_duration(remaining)} left")

        return tick
