"""A small, fair connection pool over aiomysql connections.

aiomysql's own pool wakes a waiter through a task and a condition, so a request that
arrives just then can take the freed connection first, and a waiter can lose that race
again and again: under load that shows as a long latency tail. It also scans every free
connection on each acquire and starts a task on each release. Here a released connection
is handed straight to the oldest waiter (first come, first served), a health check looks
only at the connection being handed out, and a connection attempt that is cancelled or
times out mid-handshake is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from aiomysql import Connection


def _healthy(conn: Any, recycle: float, now: float) -> bool:
    """A pooled connection the server closed, or that is older than ``recycle``, is dropped.

    Every checkout runs this, so it reads the fields behind ``closed``, ``at_eof()``,
    aiomysql's ``eof_received`` and ``exception()`` directly instead of calling five
    Python-level accessors. ``feed_eof()`` sets ``_eof`` even when MySQL 8 left an error
    packet in the buffer before closing (``at_eof()`` alone would miss that).
    """
    reader = conn._reader
    if conn._writer is None or reader is None or reader._eof or reader._exception is not None:
        return False
    return recycle < 0 or now - conn._last_usage <= recycle


class ConnectionPool:
    """``acquire()`` / ``release(conn)`` like aiomysql's Pool; at most ``maxsize`` connections."""

    def __init__(self, minsize: int, maxsize: int, recycle: float, **connect_kwargs: Any) -> None:
        self.minsize = minsize
        self.maxsize = maxsize
        self._recycle = recycle
        self._connect_kwargs = connect_kwargs
        self._free: deque[Any] = deque()
        self._used: set[Any] = set()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._opening = 0
        self._reserved = 0  # rights to open a connection handed to waiters not yet running
        self._closing = False
        self._reapers: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # connections belong to one loop

    @property
    def size(self) -> int:
        return len(self._free) + len(self._used) + self._opening + self._reserved

    @property
    def freesize(self) -> int:
        return len(self._free)

    async def fill(self) -> None:
        """Open ``minsize`` connections up front, so a bad DSN fails at start-up."""
        while self.size < self.minsize:
            conn = await self._open()
            self._free.append(conn)

    async def _open(self) -> Any:
        """Connect; a caller that gives up (deadline, cancel) never leaves an attempt behind.

        aiomysql's connect runs under ``asyncio.wait_for``, which before Python 3.12 can
        swallow a cancellation that lands as the TCP connect completes; the attempt would
        then wait in the handshake forever. So it runs as its own task behind ``shield``:
        our caller's cancellation always goes through, and the abandoned attempt is
        cancelled until it stops, then closed.
        """
        self._opening += 1
        conn = Connection(**self._connect_kwargs)
        attempt = asyncio.ensure_future(conn._connect())
        try:
            await asyncio.shield(attempt)
        except BaseException:
            if attempt.done():
                conn.close()  # aiomysql leaves the socket open when cancelled mid-handshake
            else:
                reaper = asyncio.ensure_future(_abandon(attempt, conn))
                self._reapers.add(reaper)
                reaper.add_done_callback(self._reapers.discard)
            raise
        finally:
            self._opening -= 1
        return conn

    async def acquire(self) -> Any:
        if self._closing:
            raise RuntimeError("the connection pool is closed")
        loop = self._loop
        if loop is None:  # kept: asyncio.get_running_loop() costs a system call on 3.11
            loop = self._loop = asyncio.get_running_loop()
        while self._free:
            conn = self._free.pop()  # the most recently used: warm, least likely stale
            if _healthy(conn, self._recycle, loop.time()):
                self._used.add(conn)
                return conn
            conn.close()
        if self.size >= self.maxsize or self._waiters:
            waiter: asyncio.Future[Any] = loop.create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if not waiter.done():
                    with contextlib.suppress(ValueError):  # already popped by _hand_over
                        self._waiters.remove(waiter)
                elif not waiter.cancelled() and waiter.exception() is None:
                    handed = waiter.result()  # handed over just as we were cancelled: pass it on
                    if handed is not None:
                        self.release(handed)
                    else:
                        self._reserved -= 1
                        self._hand_over(None)
                raise
            if conn is not None:
                return conn
            # None: a connection was closed and its place was kept for us to open one.
            self._reserved -= 1
            if self._closing:
                raise RuntimeError("the connection pool is closed")
        try:
            conn = await self._open()
        except BaseException:
            self._hand_over(None)  # the place it held is free again
            raise
        self._used.add(conn)
        return conn

    def release(self, conn: Any) -> None:
        """Give a connection back; a closed one frees its place for the next waiter."""
        self._used.discard(conn)
        if conn.closed or self._closing:
            conn.close()
            self._hand_over(None)
            return
        if not self._hand_over(conn):
            self._free.append(conn)

    def _hand_over(self, conn: Any) -> bool:
        """Give ``conn`` (or, with None, the right to open one) to the oldest waiter.

        The place stays counted in ``size`` until the waiter runs (a connection counts as in
        use, a right to open one as reserved): otherwise a newcomer in the same turn of the
        loop would find room and open one connection more than ``maxsize``.
        """
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._reserved += 1
                else:
                    self._used.add(conn)
                waiter.set_result(conn)
                return True
        return False

    def close(self) -> None:
        """Close idle connections now; those in use are closed when they come back."""
        self._closing = True
        while self._free:
            self._free.pop().close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the connection pool is closed"))

    async def wait_closed(self) -> None:
        """Wait for connections in use to come back; callers bound the wait (shutdown only)."""
        while self._used or self._opening:  # noqa: ASYNC110 - polled once, at shutdown
            await asyncio.sleep(0.01)

    def terminate(self) -> None:
        self.close()
        for conn in list(self._used):
            conn.close()
        self._used.clear()


async def _abandon(attempt: asyncio.Future[None], conn: Any) -> None:
    """Cancel a connection attempt until it stops (a cancel can be swallowed), then close it."""
    for _ in range(100):
        if attempt.done():
            break
        attempt.cancel()
        await asyncio.wait([attempt], timeout=0.05)
    conn.close()
    if attempt.done() and not attempt.cancelled():
        attempt.exception()  # retrieved, so asyncio does not log it as never retrieved
