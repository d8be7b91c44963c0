"""The database gateway: the pool, checkout under a deadline, and one statement with its retries.

Everything above it (the session table, locks, the schema) runs statements through
:meth:`Gateway.execute` or a :class:`Link` from :meth:`Gateway.connection`, and sees only
``SessionError`` subclasses; everything below it is the driver (``driver.py``). Every
statement runs under a deadline that covers acquiring the connection too, because
aiomysql's own ``connect_timeout`` does not cover the handshake; a connection that failed,
timed out or was cancelled mid-statement is closed, never reused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from threading import get_ident
from typing import Any

from . import driver
from .coordination import CAUSAL_READS, Cluster, detect
from .driver import Connection, Pool
from .dsn import DSN
from .errors import (
    SessionBackendError,
    SessionConfigError,
    SessionError,
)
from .link import Link, Result, bounded
from .metrics import SessionObserver
from .pool import ConnectionPool, PoolState, for_dsn, state
from .watchdog import Watchdog

logger = logging.getLogger("asgi_mysql_session")

#: The link holding the current task's session lock (serialized mode), if any.
_HELD: ContextVar[Link | None] = ContextVar("asgi_mysql_session_held_link", default=None)
#: Attribute set on a connection once it ran the gateway's session setup (Galera).
_SETUP_MARK = "_asgi_mysql_session_setup"


class Gateway:
    """A pool (built from a DSN, or lent by the user) and the rules for using it."""

    def __init__(
        self,
        dsn: DSN | None,
        pool: Pool | None,
        *,
        timeout: float,
        observer: SessionObserver,
        cluster: Cluster | None,
        causal_reads: bool,
    ) -> None:
        self._dsn = dsn
        self._pool: Pool | None = pool
        self._owns_pool = pool is None
        self.timeout = timeout
        self.observer = observer
        #: Statements run by kind ("select", "update"...), cheap to read for metrics and tests.
        self.statements: Counter[str] = Counter()
        self.database = dsn.database if dsn else ""
        self._cluster_option = cluster
        self.cluster: Cluster | None = None  # known once open
        self.causal_reads = causal_reads
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = 0  # the thread running ``loop``
        self._watchdog = Watchdog()
        self._background: set[asyncio.Task[None]] = set()
        self._session_setup: str | None = None  # the statement each connection runs once
        #: Set by the provider: reopens it when the loop it was opened on has closed.
        self.before_use: Callable[[], Awaitable[None]] | None = None
        #: Set by the provider: the message for a missing session table.
        self.missing_table: Callable[[], str] = lambda: "the session table does not exist"

    # -- lifecycle -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def owns_pool(self) -> bool:
        """True when the pool was built here (from a DSN), not lent by the user."""
        return self._owns_pool

    @property
    def max_connections(self) -> int:
        return self._dsn.pool_max if self._dsn else int(getattr(self._pool, "maxsize", 2))

    async def open(self) -> None:
        """Build the pool (unless lent), check the connections' flags, learn the cluster kind."""
        self.loop = asyncio.get_running_loop()
        self.thread = get_ident()
        if self._pool is None:
            self._pool = await self._create_pool()
        try:
            await self._check_connection()
        except BaseException:
            await self.close()
            raise

    async def _create_pool(self) -> ConnectionPool:
        dsn = self._dsn
        assert dsn is not None
        pool = for_dsn(dsn, lock_wait=int(self.timeout), on_host_down=self.observer.failover)
        try:
            # Each attempt is bounded by connect_timeout; a long statement timeout (the CLI's)
            # does not make a silent server hold start-up longer than its hosts' attempts.
            limit = max(dsn.connect_timeout, min(self.timeout, dsn.connect_timeout * len(dsn.hosts)))
            await bounded(pool.fill(), limit)
            return pool
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, TimeoutError):
                raise self.failed(f"cannot connect to {dsn.redacted()}: no answer", "timeout") from exc
            if isinstance(exc, (driver.DriverError, OSError)):
                raise self.failed(f"cannot connect to {dsn.redacted()}: {exc}", "connection") from exc
            raise

    async def close(self) -> None:
        """Close the pool (only if it was built here) and the deadline timer."""
        pool, self._pool = self._pool, (None if self._owns_pool else self._pool)
        self._watchdog.close()
        self.loop = None
        if pool is None or not self._owns_pool:
            return
        pool.close()
        try:
            await bounded(pool.wait_closed(), self.timeout)
        except TimeoutError:
            pool.terminate()

    def abandon(self) -> None:
        """Forget a pool whose loop closed: its sockets are closed without that loop."""
        if self._owns_pool and self._pool is not None:
            for conn in driver.pooled(self._pool):
                driver.close_on_dead_loop(conn)
            self._pool = None
        self.loop = None
        self._background = set()
        self._watchdog = Watchdog()

    async def _check_connection(self) -> None:
        """The pool's connections have the flags the package needs; Galera or one server."""
        async with self.connection() as link:
            conn = link.conn
            driver.check(conn, None if isinstance(self._pool, ConnectionPool) else self._pool)
            if not conn.client_flag & driver.FOUND_ROWS:
                raise SessionConfigError(
                    "the aiomysql pool must be created with client_flag=CLIENT.FOUND_ROWS "
                    "(and autocommit=True): use MySQLSessionProvider.connect_kwargs()"
                )
            if not conn.get_autocommit():
                raise SessionConfigError("the aiomysql pool must be created with autocommit=True")
            if not self.database:
                _, rows = await link.execute("SELECT DATABASE()")
                self.database = rows[0][0] or ""
            cluster = self._cluster_option
            if cluster is None:  # one uncounted statement at open
                try:
                    cluster = await bounded(detect(conn), self.timeout)
                except TimeoutError as exc:
                    link.broken = True
                    raise self.failed(
                        f"the database did not answer within {self.timeout:g}s", "timeout"
                    ) from exc
                except driver.DriverError as exc:
                    link.broken = not driver.is_server_error(exc)
                    message = f"cannot tell whether this is a Galera cluster: {exc}"
                    raise self.failed(message, "statement") from exc
        self.cluster = cluster
        galera = cluster is Cluster.GALERA
        self._session_setup = CAUSAL_READS if galera and self.causal_reads else None

    def failed(
        self, message: str, kind: str, error: type[SessionBackendError] = SessionBackendError
    ) -> SessionBackendError:
        """Log a failure once, count it, and make the error to raise (cause chained by caller)."""
        logger.warning("session backend error: %s", message)
        self.observer.database_error(kind)
        return error(message)

    def pool_state(self) -> PoolState:
        return state(self._pool, self.max_connections)

    # -- connections -----------------------------------------------------------------

    def task_on_loop(self) -> asyncio.Task[Any] | None:
        """The current task if it runs on the loop the gateway was opened on, else None.

        Not asyncio.get_running_loop(): on Python 3.11 it makes a getpid() system call. The
        opened loop's current task is this task only when that loop runs this code.
        """
        loop = self.loop
        return asyncio.current_task(loop) if loop is not None and self.thread == get_ident() else None

    def held(self) -> Link | None:
        """The link holding this task's session lock, if it is one of this gateway's."""
        held = _HELD.get()
        return held if held is not None and held.gateway is self else None

    @asynccontextmanager
    async def holding(self, link: Link) -> AsyncIterator[None]:
        """Run this task's statements on ``link`` (it holds the session lock) until the end."""
        link.shared = asyncio.Lock()
        token = _HELD.set(link)
        try:
            yield
        finally:
            _HELD.reset(token)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Link]:
        """Check out a connection for several statements, each under its own deadline.

        For sweeps, locks and maintenance; it always goes back to the pool.
        """
        pool = await self._usable_pool()
        try:
            conn = await bounded(pool.acquire(), self.timeout)
        except TimeoutError as exc:
            raise self.failed(
                f"no database connection within {self.timeout:g}s (pool exhausted or database unreachable)",
                "timeout",
            ) from exc
        except (driver.DriverError, OSError) as exc:
            raise self.failed(f"cannot connect to the database: {exc}", "connection") from exc
        link = Link(conn, self, True)
        try:
            if self._session_setup is not None and getattr(conn, _SETUP_MARK, None) != self._session_setup:
                await self._set_up(link)
            yield link
        except BaseException as exc:
            if not isinstance(exc, SessionError):  # cancelled or failed mid-statement
                link.broken = True
            raise
        finally:
            self._give_back(pool, link)

    async def _usable_pool(self) -> Pool:
        if self.before_use is not None:
            await self.before_use()
        pool = self._pool
        if pool is None:
            raise SessionError("the provider is not open: await provider.open() first")
        if self.loop is not None and self.loop is not asyncio.get_running_loop():
            raise SessionError(
                "the provider is open on another event loop that is still open: close it there "
                "first (it then reopens on this loop), or use one provider per loop"
            )
        return pool

    def node_lost(self, conn: Connection, reason: str) -> None:
        """A statement failed as if the server were gone: with several hosts, mark it down."""
        pool = self._pool
        if isinstance(pool, ConnectionPool):
            pool.connection_failed(conn, reason)

    def _give_back(self, pool: Pool, link: Link) -> None:
        """Return a connection to its pool; one in an unknown state is closed, not reused."""
        conn = link.conn
        if link.broken:
            conn.close()
        pool.release(conn)
        if link.broken and not isinstance(pool, ConnectionPool):
            task = asyncio.get_running_loop().create_task(driver.wake(pool))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def execute(self, statement: str, args: Sequence[Any] = ()) -> Result:
        """One statement under one deadline that covers acquiring the connection too.

        Inside a session lock the statement runs on the connection holding the lock, so a
        serialized request never needs a second connection (and cannot deadlock the pool).
        This is every request's path, so it is written out flat (no context managers) and
        bounded by the gateway's watchdog rather than a timer of its own.
        """
        held = _HELD.get()
        if held is not None and held.gateway is self and not held.broken:
            assert held.shared is not None
            async with held.shared:  # the handler may run statements from several tasks
                return await held.execute(statement, args)
        pool = self._pool
        loop = self.loop
        task = self.task_on_loop()
        if loop is None or task is None or pool is None:  # the checked, slow way
            pool = await self._usable_pool()
            loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
        watchdog = self._watchdog
        token = watchdog.arm(loop, self.timeout, task)
        link: Link | None = None
        try:
            for retried in (False, True):
                try:
                    conn = await pool.acquire()
                except (driver.DriverError, OSError) as exc:
                    raise self.failed(f"cannot connect to the database: {exc}", "connection") from exc
                link = Link(conn, self, False)
                setup = self._session_setup
                if setup is not None and getattr(conn, _SETUP_MARK, None) != setup:
                    await self._set_up(link)
                try:
                    return await link.execute(statement, args)
                except SessionBackendError as exc:
                    if retried or not (
                        link.broken
                        and getattr(pool, "several_hosts", False)
                        and driver.lost_read(statement, exc.__cause__)
                    ):
                        raise
                # With several hosts, a read whose connection was gone (its node died, or is not
                # ready) changed nothing: it runs once more on another connection, within the
                # same deadline. Writes never run again: one whose connection died may have
                # committed.
                self._give_back(pool, link)
                link = None
            raise AssertionError("unreachable")  # pragma: no cover
        except asyncio.CancelledError as exc:  # link.execute marked its connection broken
            if watchdog.expired(token):
                raise self.failed(
                    f"the database did not answer within {self.timeout:g}s "
                    "(pool exhausted or database unreachable)",
                    "timeout",
                ) from exc
            raise
        finally:
            watchdog.disarm(token)
            if link is not None:
                self._give_back(pool, link)

    async def _set_up(self, link: Link) -> None:
        """Once per connection (Galera): the session settings, e.g. causal reads."""
        setup = self._session_setup
        assert setup is not None
        await link.execute(setup)
        setattr(link.conn, _SETUP_MARK, setup)
