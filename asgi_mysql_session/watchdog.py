"""One timer per provider that bounds every in-flight statement.

``asyncio.timeout`` schedules and cancels a timer handle for each statement and costs
several microseconds of bookkeeping per use; a session request spends more on that than on
its own logic. Here a statement only records its deadline in a dict, and one timer, armed
while anything is in flight, cancels the tasks whose deadline has passed. A deadline thus
fires up to one tick late (a tenth of the timeout, at most 100 ms), which is well inside
what a timeout of seconds promises.
"""

from __future__ import annotations

import asyncio
import sys
from itertools import count


class _Entry:
    __slots__ = ("cancelling", "deadline", "fired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float, cancelling: int) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = cancelling
        self.fired = False


class Watchdog:
    """``arm()`` before awaiting, ``expired(token)`` on ``CancelledError``, ``disarm(token)`` after."""

    def __init__(self) -> None:
        self._tick = 0.1
        self._entries: dict[int, _Entry] = {}
        self._tokens = count()
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float) -> int:
        """Bound the current task by ``seconds``; returns the token for the other methods."""
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - coroutines always run in a task under asyncio
            raise RuntimeError("a deadline needs a running task")
        token = next(self._tokens)
        cancelling = 0
        if sys.version_info >= (3, 11):
            cancelling = task.cancelling()
        self._entries[token] = _Entry(task, loop.time() + seconds, cancelling)
        if seconds < self._tick * 10:
            self._tick = max(seconds / 10, 0.001)
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self._tick, self._check, loop)
        return token

    def disarm(self, token: int) -> None:
        self._entries.pop(token, None)

    def expired(self, token: int) -> bool:
        """True if the ``CancelledError`` being handled is this deadline's, not a real cancel.

        Like ``asyncio.timeout`` it takes back its own cancellation (``uncancel``), so an
        outer timeout or TaskGroup still sees any other cancellation that arrived too.
        """
        entry = self._entries.get(token)
        if entry is None or not entry.fired:
            return False
        if sys.version_info >= (3, 11):
            return entry.task.uncancel() <= entry.cancelling
        return True  # pragma: no cover - Python 3.10

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for entry in self._entries.values():
            if not entry.fired and entry.deadline <= now:
                entry.fired = True
                entry.task.cancel()
        if self._entries:
            self._timer = loop.call_at(now + self._tick, self._check, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
