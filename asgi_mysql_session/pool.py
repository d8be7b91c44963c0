"""A small, fair connection pool over aiomysql connections.

aiomysql's own pool wakes a waiter through a task and a condition, so a request that
arrives just then can take the freed connection first, and a waiter can lose that race
again and again: under load that shows as a long latency tail. It also scans every free
connection on each acquire and starts a task on each release. Here a released connection
is handed straight to the oldest waiter (first come, first served), a health check looks
only at the connection being handed out, and a connection attempt that is cancelled or
times out mid-handshake is closed at once.

With several hosts (a DSN listing ``host1,host2,...``) ``failover.py`` decides where new
connections go. ``for_dsn`` builds the pool the provider uses; ``state`` describes a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import driver
from .driver import Connection
from .dsn import DSN
from .failover import Host, Hosts, NoHostAvailable, check_ready
from .link import bounded

logger = logging.getLogger("asgi_mysql_session")


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
        self._free: deque[Connection] = deque()
        self._used: set[Connection] = set()
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._opening = 0
        self._reserved = 0  # rights to open a connection handed to waiters not yet running
        self._closing = False
        self._reapers: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # connections belong to one loop
        connect_timeout = connect_kwargs.get("connect_timeout")
        self._connect_timeout = float(connect_timeout) if connect_timeout else 5.0
        self._hosts: Hosts | None = None
        if hosts is not None and len(hosts) > 1:
            self._hosts = Hosts(hosts, in_order=host_order != "random", on_down=on_host_down)

    @property
    def size(self) -> int:
        return len(self._free) + len(self._used) + self._opening + self._reserved

    @property
    def freesize(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    async def fill(self) -> None:
        """Open ``minsize`` connections up front, so a bad DSN fails at start-up."""
        while self.size < self.minsize:
            conn = await self._open()
            self._free.append(conn)

    async def _open(self) -> Connection:
        """Connect; a caller that gives up (deadline, cancel) never leaves an attempt behind."""
        self._opening += 1
        try:
            if self._hosts is None:
                return await self._attempt(self._connect_kwargs, None, None)
            return await self._open_any(self._hosts)
        finally:
            self._opening -= 1

    async def _attempt(self, kwargs: dict[str, Any], host: Host | None, bound: float | None) -> Connection:
        """One connection attempt, bounded by ``bound`` seconds (None: by the caller only).

        aiomysql's connect runs under ``asyncio.wait_for``, which before Python 3.12 can
        swallow a cancellation that lands as the TCP connect completes; the attempt would
        then wait in the handshake forever. So it runs as its own task behind ``shield``:
        our caller's cancellation always goes through, and the abandoned attempt is
        cancelled until it stops, then closed.
        """
        conn = driver.new_connection(**kwargs)
        attempt = asyncio.ensure_future(_handshake(conn, host))
        try:
            if bound is None:
                await asyncio.shield(attempt)
            else:
                await bounded(asyncio.shield(attempt), bound)
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

    async def _open_any(self, hosts: Hosts) -> Connection:
        loop = asyncio.get_running_loop()
        reasons: list[str] = []
        for host in hosts.candidates(loop.time()):
            started = loop.time()
            if host.down and host.retry_at <= started:
                host.probing = True  # only this attempt tries it; the others go on meanwhile
            kwargs = {**self._connect_kwargs, "host": host.host, "port": host.port}
            try:
                conn = await self._attempt(kwargs, host, self._connect_timeout)
            except (OSError, driver.DriverError) as exc:  # TimeoutError is an OSError
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
            hosts.bind(conn, host)
            hosts.up(host)
            return conn
        raise NoHostAvailable("no database host is available: " + "; ".join(reasons))

    def _host_failed(self, host: Host, reason: str) -> None:
        """Mark a host down; when it just went down, its idle connections are closed."""
        assert self._hosts is not None
        if self._hosts.failed(host, reason):
            kept: deque[Connection] = deque()
            for conn in self._free:
                if self._hosts.of(conn) is host:
                    conn.close()
                else:
                    kept.append(conn)
            self._free = kept

    def connection_failed(self, conn: Connection, reason: str) -> None:
        """A statement on ``conn`` failed as if its host were gone: mark that host down.

        Only with several hosts; the caller closes the connection itself.
        """
        host = self._hosts.of(conn) if self._hosts is not None else None
        if host is not None:
            self._host_failed(host, reason)

    @property
    def several_hosts(self) -> bool:
        """True when it fails over between two or more hosts."""
        return self._hosts is not None

    def host_states(self) -> dict[str, bool]:
        """Each host's label and whether it is considered up (several hosts only; else empty)."""
        return self._hosts.states() if self._hosts is not None else {}

    async def acquire(self) -> Connection:
        if self._closing:
            raise RuntimeError("the connection pool is closed")
        loop = self._loop
        if loop is None:  # kept: asyncio.get_running_loop() costs a system call on 3.11
            loop = self._loop = asyncio.get_running_loop()
        while self._free:
            conn = self._free.pop()  # the most recently used: warm, least likely stale
            if driver.reusable(conn, self._recycle, loop.time()):
                self._used.add(conn)
                return conn
            conn.close()
        if self.size >= self.maxsize or self._waiters:
            waiter: asyncio.Future[Connection | None] = loop.create_future()
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

    def release(self, conn: Connection) -> None:
        """Give a connection back; a closed one frees its place for the next waiter."""
        self._used.discard(conn)
        if conn.closed or self._closing or (self._hosts is not None and not self._hosts.keep(conn)):
            conn.close()
            self._hand_over(None)
            return
        if not self._hand_over(conn):
            self._free.append(conn)

    def _hand_over(self, conn: Connection) -> bool:
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


async def _handshake(conn: Connection, host: Host | None) -> None:
    """Connect; with several hosts, check that a Galera node is ready (``check_ready``)."""
    await driver.handshake(conn)
    if host is not None:
        await check_ready(conn, host)


async def _abandon(attempt: asyncio.Future[None], conn: Connection) -> None:
    """Cancel a connection attempt until it stops (a cancel can be swallowed), then close it."""
    for _ in range(100):
        if attempt.done():
            break
        attempt.cancel()
        await asyncio.wait([attempt], timeout=0.05)
    conn.close()
    if attempt.done() and not attempt.cancelled():
        attempt.exception()  # retrieved, so asyncio does not log it as never retrieved


SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO"


def connect_kwargs() -> dict[str, Any]:
    """The aiomysql connection options the package relies on, for pools users build."""
    return {
        "autocommit": True,
        "client_flag": driver.FOUND_ROWS,
        "charset": "utf8mb4",
        "init_command": f"SET SESSION sql_mode = '{SQL_MODE}'",
    }


def for_dsn(dsn: DSN, *, lock_wait: int, on_host_down: Callable[[str], None]) -> ConnectionPool:
    """The pool a DSN describes (not connected yet: ``await pool.fill()``)."""
    kwargs = connect_kwargs()
    kwargs["init_command"] += f", SESSION innodb_lock_wait_timeout = {max(1, lock_wait)}"
    several = len(dsn.hosts) > 1 and not dsn.unix_socket
    return ConnectionPool(
        dsn.pool_min,
        dsn.pool_max,
        dsn.pool_recycle,
        hosts=dsn.hosts if several else None,
        host_order=dsn.host_order,
        on_host_down=on_host_down,
        host=dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        db=dsn.database,
        unix_socket=dsn.unix_socket,
        connect_timeout=dsn.connect_timeout,
        **kwargs,
    )


@dataclass(frozen=True)
class PoolState:
    """The connections of the provider's pool, for metrics and health checks."""

    size: int  #: open (or opening) connections
    free: int  #: idle ones
    in_use: int  #: checked out (a request or a session lock holds them)
    maxsize: int
    #: with several hosts: each host and whether it is considered up; else empty
    hosts: dict[str, bool]


def state(pool: driver.Pool | None, maxsize: int) -> PoolState:
    """What ``pool`` holds (ours, or an aiomysql pool lent by the user; None: closed)."""
    if pool is None:
        return PoolState(0, 0, 0, maxsize, {})
    if isinstance(pool, ConnectionPool):
        return PoolState(pool.size, pool.freesize, pool.in_use, pool.maxsize, pool.host_states())
    size, free = int(pool.size), int(pool.freesize)
    return PoolState(size, free, size - free, int(pool.maxsize), {})
