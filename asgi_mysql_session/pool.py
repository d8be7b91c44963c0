"""A small, fair connection pool over aiomysql connections.

aiomysql's own pool wakes a waiter through a task and a condition, so a request that
arrives just then can take the freed connection first, and a waiter can lose that race
again and again: under load that shows as a long latency tail. It also scans every free
connection on each acquire and starts a task on each release. Here a released connection
is handed straight to the oldest waiter (first come, first served), a health check looks
only at the connection being handed out, and a connection attempt that is cancelled or
times out mid-handshake is closed at once.

With several hosts (a DSN listing ``host1,host2,...``) new connections go to the first
healthy host in the listed order (or one at random with ``host_order="random"``). A host
that refuses, does not answer within ``connect_timeout``, or is a Galera node that is not
ready is marked down for a backoff (1 s, growing to 5 s) and skipped meanwhile; its idle
connections are closed, and connections to it coming back are closed rather than kept.
When the backoff has passed one new connection tries it again (a probe); in listed order,
once an earlier host is usable again the connections to later hosts are closed as they
come back, so the pool moves back to it. Hosts in their backoff are still tried, last, when
every other host failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pymysql
from aiomysql import Connection

from .dsn import host_label

logger = logging.getLogger("asgi_mysql_session")

#: A host that failed is skipped for this long, doubled on every failed retry up to the cap.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 5.0


async def _within(aw: Awaitable[None], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        await aw


class NoHostAvailable(OSError):
    """Every host of the list refused, timed out or was not ready (the reasons, per host)."""


class NodeNotReady(OSError):
    """A Galera node that accepted the connection but is not ready (wsrep_ready OFF)."""


class _Host:
    """One host of the list and what the pool knows about it."""

    __slots__ = ("down", "failures", "host", "index", "label", "port", "probing", "retry_at", "wsrep")

    def __init__(self, index: int, host: str, port: int) -> None:
        self.index = index
        self.host = host
        self.port = port
        self.label = host_label(host, port)
        self.down = False
        self.failures = 0
        self.retry_at = 0.0
        self.probing = False  # a new connection is trying it again after its backoff
        self.wsrep: bool | None = None  # a Galera node? learnt on the first connection

    def eligible(self, now: float) -> bool:
        return not self.down or (self.retry_at <= now and not self.probing)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


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

    def __init__(
        self,
        minsize: int,
        maxsize: int,
        recycle: float,
        *,
        hosts: Sequence[tuple[str, int]] | None = None,
        host_order: str = "first",
        on_host_down: Callable[[str], None] | None = None,
        **connect_kwargs: Any,
    ) -> None:
        """``hosts``: two or more (host, port) to fail over between; otherwise ``host``/``port``
        of ``connect_kwargs`` is the one server, as in aiomysql, and nothing else changes."""
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
        self._hosts: list[_Host] | None = None
        if hosts is not None and len(hosts) > 1:
            self._hosts = [_Host(i, host, port) for i, (host, port) in enumerate(hosts)]
        self._in_order = host_order != "random"
        self._on_host_down = on_host_down
        connect_timeout = connect_kwargs.get("connect_timeout")
        self._connect_timeout = float(connect_timeout) if connect_timeout else 5.0

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
        """Connect; a caller that gives up (deadline, cancel) never leaves an attempt behind."""
        self._opening += 1
        try:
            if self._hosts is None:
                return await self._attempt(self._connect_kwargs, None, None)
            return await self._open_any(self._hosts)
        finally:
            self._opening -= 1

    async def _attempt(self, kwargs: dict[str, Any], host: _Host | None, bound: float | None) -> Any:
        """One connection attempt, bounded by ``bound`` seconds (None: by the caller only).

        aiomysql's connect runs under ``asyncio.wait_for``, which before Python 3.12 can
        swallow a cancellation that lands as the TCP connect completes; the attempt would
        then wait in the handshake forever. So it runs as its own task behind ``shield``:
        our caller's cancellation always goes through, and the abandoned attempt is
        cancelled until it stops, then closed.
        """
        conn = Connection(**kwargs)
        attempt = asyncio.ensure_future(self._handshake(conn, host))
        try:
            if bound is None:
                await asyncio.shield(attempt)
            else:
                await _within(asyncio.shield(attempt), bound)
        except BaseException:
            if attempt.done():
                conn.close()  # aiomysql leaves the socket open when cancelled mid-handshake
                if not attempt.cancelled():
                    attempt.exception()  # retrieved: raised here, or superseded by our cancel
            else:
                reaper = asyncio.ensure_future(_abandon(attempt, conn))
                self._reapers.add(reaper)
                reaper.add_done_callback(self._reapers.discard)
            raise
        return conn

    @staticmethod
    async def _handshake(conn: Any, host: _Host | None) -> None:
        """Connect; on a Galera node (learnt once per host), check that it is ready.

        A server without wsrep costs one ``SHOW VARIABLES`` on the first connection to it
        (and again after it was down), never anything per request.
        """
        await conn._connect()
        if host is None:
            return
        if host.wsrep is None:
            await conn.query("SHOW VARIABLES LIKE 'wsrep_on'")
            rows: Sequence[Any] = conn._result.rows or ()
            host.wsrep = bool(rows) and _text(rows[0][1]).upper() == "ON"
        if host.wsrep:
            await conn.query("SHOW STATUS LIKE 'wsrep_ready'")
            rows = conn._result.rows or ()
            if not rows or _text(rows[0][1]).upper() != "ON":
                raise NodeNotReady("the Galera node is not ready (wsrep_ready OFF)")

    def _candidates(self, hosts: list[_Host], now: float) -> list[_Host]:
        """Usable hosts first (listed order, or shuffled), then those in backoff, soonest first."""
        usable = [h for h in hosts if h.eligible(now)]
        if not self._in_order:
            random.shuffle(usable)
        resting = sorted((h for h in hosts if not h.eligible(now)), key=lambda h: h.retry_at)
        return usable + resting

    async def _open_any(self, hosts: list[_Host]) -> Any:
        loop = asyncio.get_running_loop()
        reasons: list[str] = []
        for host in self._candidates(hosts, loop.time()):
            started = loop.time()
            if host.down and host.retry_at <= started:
                host.probing = True  # only this attempt tries it; the others go on meanwhile
            kwargs = {**self._connect_kwargs, "host": host.host, "port": host.port}
            try:
                conn = await self._attempt(kwargs, host, self._connect_timeout)
            except (OSError, pymysql.err.MySQLError) as exc:  # TimeoutError is an OSError
                if isinstance(exc, TimeoutError):
                    reason = f"no answer within connect_timeout ({self._connect_timeout:g}s)"
                else:
                    reason = str(exc) or type(exc).__name__
                self._host_failed(host, reason)
                reasons.append(f"{host.label}: {reason}")
                continue
            except BaseException:
                # The caller gave up (its deadline): a host that kept it waiting that long
                # is as good as down, or every request would wait on it again.
                if loop.time() - started >= min(1.0, self._connect_timeout):
                    self._host_failed(host, "no answer before the caller's deadline")
                host.probing = False
                raise
            conn._failover_host = host
            self._host_up(host)
            return conn
        raise NoHostAvailable("no database host is available: " + "; ".join(reasons))

    def _host_failed(self, host: _Host, reason: str) -> None:
        """Mark a host down (logged once per change) or, if its retry failed, lengthen its backoff."""
        now = asyncio.get_running_loop().time()
        host.probing = False
        if host.down:
            if host.retry_at <= now:  # it was tried again after its backoff and failed again
                host.failures += 1
                host.retry_at = now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (host.failures - 1))
            return
        host.down = True
        host.failures = 1
        host.retry_at = now + BACKOFF_FIRST
        host.wsrep = None  # it may come back as something else
        logger.warning(
            "database host %s is down (%s); new connections go to the other hosts, it is retried "
            "after a backoff of %g-%gs",
            host.label,
            reason,
            BACKOFF_FIRST,
            BACKOFF_MAX,
        )
        if self._on_host_down is not None:
            self._on_host_down(host.label)
        kept: deque[Any] = deque()
        for conn in self._free:
            if getattr(conn, "_failover_host", None) is host:
                conn.close()
            else:
                kept.append(conn)
        self._free = kept

    def _host_up(self, host: _Host) -> None:
        host.probing = False
        if host.down:
            host.down = False
            host.failures = 0
            logger.warning("database host %s is up again; new connections may use it", host.label)

    def connection_failed(self, conn: Any, reason: str) -> None:
        """A statement on ``conn`` failed as if its host were gone: mark that host down.

        Only with several hosts; the caller closes the connection itself.
        """
        host = getattr(conn, "_failover_host", None)
        if host is not None and self._hosts is not None:
            self._host_failed(host, reason)

    def _keep(self, conn: Any) -> bool:
        """Whether a connection coming back stays pooled (several hosts only).

        Not if its host is down; in listed order, not if an earlier host is usable again.
        """
        host: _Host | None = getattr(conn, "_failover_host", None)
        if host is None or self._hosts is None:
            return True
        if host.down:
            return False
        if self._in_order and host.index:
            now = asyncio.get_running_loop().time()
            return not any(h.eligible(now) for h in self._hosts[: host.index])
        return True

    @property
    def several_hosts(self) -> bool:
        """True when it fails over between two or more hosts."""
        return self._hosts is not None

    def host_states(self) -> dict[str, bool]:
        """Each host's label and whether it is considered up (several hosts only; else empty)."""
        return {h.label: not h.down for h in self._hosts or ()}

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
        if conn.closed or self._closing or (self._hosts is not None and not self._keep(conn)):
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
