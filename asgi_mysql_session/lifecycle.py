"""Binding to the event loop that opened it: open once, close with that loop, reopen on the next.

The provider owns connections, a sweeper task and a deadline timer, all tied to one asyncio
loop. ``asyncio.run``, anyio, Starlette's ``TestClient`` used without ``with`` and
pytest-asyncio each run a loop and then close it, cancelling every task first: a guard task
notices that and closes the provider, and the next use on another loop opens it again
there, so no connection outlives its loop. A loop that closed without cancelling (the guard
never ran) is detected at the next use, and what belonged to it is abandoned.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from . import driver
from .loops import require_asyncio


class LoopBound:
    """``open()``/``close()`` and ``async with`` for a subclass that fills in the hooks:
    ``_start``/``_stop`` (open and close its parts), ``_forget`` (drop what belonged to a
    loop that closed; returns its unfinished tasks), ``_bound_loop`` and ``_reopenable``."""

    def __init__(self) -> None:
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._guard: asyncio.Task[None] | None = None  # closes it when its loop shuts down

    @property
    def is_open(self) -> bool:
        return self._opened

    async def open(self) -> None:
        """Build the pool and check (or create) the table. Safe to call more than once.

        The provider belongs to the event loop that opened it and closes itself when that
        loop shuts down; the next use on another loop opens it again there.
        """
        if self._opened:
            loop = self._bound_loop()
            if loop is None or not loop.is_closed():
                return
            self._abandon()  # its loop ended without shutting it down
        loop = require_asyncio()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            await self._start()
            self._opened = True
            self._guard = loop.create_task(self._close_with_loop(), name="asgi_mysql_session loop guard")

    async def close(self) -> None:
        """Stop the sweeper and close the pool (only if the provider built it)."""
        guard, self._guard = self._guard, None
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
            await asyncio.wait([guard])  # never left pending on a loop about to close
        await self._stop()
        if self._opened:
            self._opened = False
            self._open_lock = None  # an asyncio.Lock may be bound to this loop

    async def _close_with_loop(self) -> None:
        """Wait for the loop's shutdown (which cancels every task), then close."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if self._guard is asyncio.current_task():
                self._guard = None
                await self.close()
            raise

    def _abandon(self) -> None:
        """Forget state tied to a loop that closed while open on it."""
        for task in [self._guard, *self._forget()]:
            if task is not None:  # never ran to its end: asyncio would log it at collection
                driver.never_log_pending(task)
        self._opened = False
        self._guard = None
        self._open_lock = None

    async def _reopen_if_loop_ended(self) -> None:
        """Reopen on the running loop when the one it was opened on has closed meanwhile."""
        loop = self._bound_loop()
        if self._opened and loop is not None and loop.is_closed() and self._reopenable():
            await self.open()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- hooks -----------------------------------------------------------------------

    def _bound_loop(self) -> asyncio.AbstractEventLoop | None:
        raise NotImplementedError

    def _reopenable(self) -> bool:
        raise NotImplementedError

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    def _forget(self) -> list[asyncio.Task[None] | None]:
        raise NotImplementedError
