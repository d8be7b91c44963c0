"""The background sweep of expired rows.

Reads never return expired rows, so sweeping is garbage collection, not security: it runs
every ``interval`` seconds (with jitter so workers started together spread out), deletes in
bounded batches on the expiry index, and takes a named lock so that with several workers on
one database only one sweeps at a time. A failed sweep is logged and retried next interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Protocol


class Sweepable(Protocol):
    """What the sweeper needs: one exclusive sweep at a time, under a statement deadline."""

    @property
    def timeout(self) -> float: ...

    async def sweep(self, *, exclusive: bool) -> int | None:
        """Delete expired rows; None if another process holds the sweep."""


logger = logging.getLogger("asgi_mysql_session")


class ExpirySweeper:
    """Sweeps ``provider`` every ``interval`` seconds (give or take ``jitter``) while started."""

    def __init__(self, provider: Sweepable, *, interval: float, jitter: float = 0.1) -> None:
        self.provider = provider
        self.interval = interval
        self.jitter = jitter
        self.sweeps = 0
        self.rows = 0
        self.failures = 0
        #: The running sweep loop, if started.
        self.task: asyncio.Task[None] | None = None
        self._between = False  # sleeping between sweeps: it can be cancelled at once
        self._stopping = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if not self.running:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="asgi_mysql_session sweeper")

    async def stop(self) -> None:
        """Stop sweeping. A sweep under way may finish within the statement deadline, so the
        lock or lease it holds is given back (a lease claimed by a cancelled statement would
        only lapse after its ttl); then it is cancelled."""
        task, self.task = self.task, None
        if task is None:
            return
        self._stopping = True
        if self._between:
            task.cancel()
        # wait() neither raises the task's CancelledError nor swallows one aimed at us; the
        # bounds keep close() from hanging if a sweep ever failed to honour the cancel.
        done, _ = await asyncio.wait([task], timeout=self.provider.timeout + 1)
        if not done:
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1)
        if not done:
            logger.warning("session sweeper did not stop within %gs", self.provider.timeout + 2)
        self._stopping = False

    def _delay(self) -> float:
        return self.interval * random.uniform(1 - self.jitter, 1 + self.jitter)

    async def _run(self) -> None:
        while not self._stopping:
            self._between = True
            try:
                await asyncio.sleep(self._delay())
            finally:
                self._between = False
            await self.sweep_once()

    async def sweep_once(self) -> int | None:
        """One exclusive sweep; None if another process held the lock or it failed."""
        started = time.perf_counter()
        try:
            rows = await self.provider.sweep(exclusive=True)
        except Exception as exc:  # logged and retried next interval, never fatal
            self.failures += 1
            logger.warning("session sweep failed, retrying in %gs: %s", self.interval, exc)
            return None
        if rows is None:
            logger.debug("session sweep skipped: another process holds the lock")
            return None
        self.sweeps += 1
        self.rows += rows
        logger.info("session sweep deleted %d expired rows in %.3fs", rows, time.perf_counter() - started)
        return rows
