"""One timer per provider that bounds every in-flight statement.

``asyncio.timeout`` schedules and cancels a timer handle for each use and costs several
microseconds of bookkeeping each time; a session request spent more on that than on its
own logic. Here a statement only records its task's deadline in a dict, and one timer,
armed while anything is in flight, cancels the tasks whose deadline has passed. A deadline
thus fires up to one tick late (a tenth of the timeout, at most 100 ms), well inside what a
timeout of seconds promises.
"""

from __future__ import annotations

import asyncio
from typing import Any

Task = asyncio.Task[Any]


class Watchdog:
    """``arm()`` before awaiting, ``expired(token)`` on ``CancelledError``, ``disarm(token)`` after."""

    def __init__(self) -> None:
        self._tick = 0.1
        #: task -> (deadline, its cancellation count when armed)
        self._deadlines: dict[Task, tuple[float, int]] = {}
        self._fired: set[Task] = set()
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float, task: Task | None = None) -> Task | None:
        """Bound ``task`` (default: the current one) by ``seconds``; returns the token for the others.

        None if the task is already bounded (its outer deadline then stands).
        """
        if task is None:
            task = asyncio.current_task(loop)
        if task is None or task in self._deadlines:
            return None
        now = loop.time()
        self._deadlines[task] = (now + seconds, task.cancelling())
        if seconds < self._tick * 10:
            self._tick = max(seconds / 10, 0.001)
        if self._timer is None:
            self._timer = loop.call_at(now + self._tick, self._check, loop)
        return task

    def disarm(self, token: Task | None) -> None:
        if token is not None:
            del self._deadlines[token]
            if self._fired:
                self._fired.discard(token)

    def expired(self, token: Task | None) -> bool:
        """True if the ``CancelledError`` being handled is this deadline's, not a real cancel.

        Like ``asyncio.timeout`` it takes back its own cancellation (``uncancel``), so an
        outer timeout or TaskGroup still sees any other cancellation that arrived too.
        """
        if token is None or token not in self._fired:
            return False
        self._fired.discard(token)
        return token.uncancel() <= self._deadlines[token][1]

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for task, (deadline, _) in self._deadlines.items():
            if deadline <= now and task not in self._fired:
                self._fired.add(task)
                task.cancel()
        if self._deadlines:
            self._timer = loop.call_at(now + self._tick, self._check, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
