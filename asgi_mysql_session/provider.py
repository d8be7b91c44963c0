"""The MySQL/MariaDB provider: the pool, the table, and every round trip to the database.

Each public coroutine is one or two single-row statements on the primary key (or a batched
delete on the expiry index). Every statement runs under a deadline that covers acquiring the
connection too, because aiomysql's own ``connect_timeout`` does not cover the handshake; a
connection that failed, timed out or was cancelled mid-statement is closed, never reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from threading import get_ident
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import pymysql
from pymysql.constants import CLIENT

from . import literals, sql
from .coalesce import ReadCoalescer
from .coordination import CAUSAL_READS, Cluster, Leases, cluster_option, detect, new_holder
from .dsn import DSN, parse_dsn
from .errors import (
    InvalidSessionId,
    SessionBackendError,
    SessionConfigError,
    SessionConflictError,
    SessionDecodeError,
    SessionError,
    SessionLockTimeout,
    SessionSchemaError,
)
from .ids import hash_id, is_well_formed, log_id, new_session_id
from .locks import KeyedLocks
from .loops import require_asyncio
from .metrics import SessionObserver
from .pool import ConnectionPool
from .serializer import decode
from .watchdog import Watchdog

if TYPE_CHECKING:
    from .gc import ExpirySweeper
    from .store import SessionStore

logger = logging.getLogger("asgi_mysql_session")

T = TypeVar("T")
Clock = Callable[[], float]

#: The connection holding the current task's session lock (serialized mode), if any.
_HELD_LINK: ContextVar[_Link | None] = ContextVar("asgi_mysql_session_held_link", default=None)

#: Attribute set on a connection once it ran the provider's session setup (Galera).
_SETUP_MARK = "_asgi_mysql_session_setup"

#: MySQL errors after which the same statement may simply run again.
_RETRYABLE = {1213: "deadlock", 1205: "lock wait timeout"}
#: "WSREP has not yet prepared node for application use": a Galera node that is not ready.
_NODE_NOT_READY = 1047
#: Client errors of a connection that is gone (server gone away, lost connection).
_CONNECTION_LOST = {2006, 2013, 2055}
_STATEMENT_RETRIES = 3
#: A write refused by a read-only server (--read-only, a read-only transaction): a replica.
_READ_ONLY = {1290, 1792}
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO"

if sys.version_info >= (3, 11):

    async def _bounded(aw: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - Python 3.10

    async def _bounded(aw: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(aw, seconds)


class Row(NamedTuple):
    """A session row as stored (a tuple: one is made on every read).

    ``version`` 0 is a tombstone: the id was superseded by a rotation (see ``lookup``).
    """

    data: bytes
    values: dict[str, Any]
    expiry: int
    version: int
    created: int
    owner: str | None

    @property
    def superseded(self) -> bool:
        return self.version == sql.TOMBSTONE_VERSION


@dataclass(frozen=True)
class OwnedSession:
    """One live session of an owner, as ``sessions_of`` lists it (never the id itself)."""

    key_hash: str
    created: int
    expiry: int


_KINDS: dict[str, str] = {}
_UNTIMED = SessionObserver.statement


def _kind(statement: str) -> str:
    """Statements are counted by their first word ("select", "update"...), cached per text."""
    kind = statement[:6].lower()
    if len(_KINDS) < 1000:  # the provider's own statements; ad-hoc ones are not kept
        _KINDS[statement] = kind
    return kind


def _is_server_error(exc: BaseException) -> bool:
    """A server-side error (1000-1999, 3000+) leaves the connection usable; client errors don't."""
    if not isinstance(exc, pymysql.err.MySQLError) or not exc.args:
        return False
    code = exc.args[0]
    return isinstance(code, int) and (1000 <= code < 2000 or code >= 3000)


def _lost_read(statement: str, exc: SessionBackendError) -> bool:
    """A SELECT that failed because its connection was lost (or its Galera node not ready)."""
    cause = exc.__cause__
    if isinstance(cause, pymysql.err.MySQLError):
        code = cause.args[0] if cause.args else None
        lost = code in _CONNECTION_LOST or code == _NODE_NOT_READY
    else:
        lost = isinstance(cause, OSError) and not isinstance(cause, TimeoutError)
    return lost and statement.lstrip()[:6].upper() == "SELECT"


class _Link:
    """One checked-out connection; every statement on it is bounded and counted."""

    __slots__ = ("bounded", "broken", "conn", "provider", "shared")

    def __init__(self, conn: Any, provider: MySQLSessionProvider, bounded: bool) -> None:
        self.conn = conn
        self.provider = provider
        self.bounded = bounded  # False when the caller holds one deadline for the whole use
        self.broken = False
        self.shared: asyncio.Lock | None = None  # set while it holds a session lock

    async def execute(
        self, statement: str, args: Sequence[Any] = (), *, extra_time: float = 0.0, retry: bool = True
    ) -> tuple[int, Sequence[Any]]:
        """Run one statement; returns (matched rows, fetched rows).

        ``extra_time`` widens the deadline for statements that wait server-side (GET_LOCK).
        ``retry=False`` inside a transaction: a deadlock rolls back the whole transaction,
        so retrying the one statement alone would run it outside of it.
        The statement goes straight to the connection (``Connection.query``), as aiomysql's
        cursor does it, without a cursor object: a cursor costs two futures, a context
        manager and four coroutines per statement, on the path every request takes.
        """
        provider = self.provider
        observer = provider.observer
        conn = self.conn
        # The default hook ignores timings: skip the clock unless it was overridden (by a
        # subclass, or on the instance itself).
        timed = getattr(observer.statement, "__func__", None) is not _UNTIMED
        for attempt in range(_STATEMENT_RETRIES):
            try:
                started = time.perf_counter() if timed else 0.0
                conn._last_usage = conn._loop.time()  # as cursor() does: pool_recycle counts idle time
                # Literals by literals.py, not the driver (its escape differs by version); no args: % stays.
                running = conn.query(literals.render(statement, args))
                count = await (_bounded(running, provider.timeout + extra_time) if self.bounded else running)
                rows = conn._result.rows or ()  # None for DML
                kind = _KINDS.get(statement) or _kind(statement)
                provider.statements[kind] += 1
                if timed:
                    observer.statement(kind, time.perf_counter() - started)
                return int(count), rows
            except (asyncio.TimeoutError, TimeoutError) as exc:
                self.broken = True
                raise provider._failed(
                    f"the database did not answer within {provider.timeout:g}s", "timeout"
                ) from exc
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else None
                if code in _RETRYABLE and retry and attempt + 1 < _STATEMENT_RETRIES:
                    logger.info("%s, retrying statement (attempt %d)", _RETRYABLE[code], attempt + 2)
                    await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
                    continue
                if not _is_server_error(exc) or code == _NODE_NOT_READY:
                    self.broken = True
                    provider._node_lost(conn, str(exc))
                if isinstance(exc, pymysql.err.IntegrityError) and code == 1062:
                    raise SessionConflictError("a session with this id already exists") from exc
                if code == 1146:
                    raise provider._failed(
                        provider._missing_table_message(), "schema", SessionSchemaError
                    ) from exc
                if code in _READ_ONLY:
                    raise provider._failed(
                        f"the database refused a write because it is read-only ({exc.args[1]}): "
                        "session reads and writes must go to the primary, not a replica",
                        "statement",
                    ) from exc
                kind = "connection" if self.broken else "statement"
                raise provider._failed(f"statement failed: {exc}", kind) from exc
            except OSError as exc:
                self.broken = True
                provider._node_lost(conn, str(exc) or type(exc).__name__)
                raise provider._failed(f"connection failed: {exc}", "connection") from exc
            except BaseException:  # cancelled mid-statement: the connection state is unknown
                self.broken = True
                raise
        raise AssertionError("unreachable")  # pragma: no cover


class MySQLSessionProvider:
    """Sessions in one MySQL/MariaDB table, reached through an aiomysql pool.

    ``dsn`` is ``mysql://user:pass@host:port/db`` with optional query options
    ``pool_min``, ``pool_max``, ``pool_recycle``, ``connect_timeout``, ``timeout``,
    ``unix_socket`` and ``host_order``; several hosts (``host1:port,host2:port``) are failed
    over between (see ``pool.py``). Pass ``pool=`` instead to share an aiomysql pool you own; it must be
    created with ``autocommit=True`` and ``client_flag=CLIENT.FOUND_ROWS``
    (see :meth:`connect_kwargs`).

    Session reads that arrive in the same event-loop turn share one SELECT
    (``coalesce_reads=False`` sends each on its own; see ``asgi_mysql_session.coalesce``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Any = None,
        table: str = "session",
        max_lifetime: int = 3600,
        absolute_lifetime: int | None = 86400,
        touch_after: int | None = None,
        rotation_grace: int = 300,
        max_size: int = 65536,
        create_table: bool = False,
        timeout: float = 5.0,
        write_retries: int = 10,
        gc_interval: float | None = 600.0,
        gc_batch_size: int = 1000,
        gc_pause: float = 0.05,
        lock_connections: int | None = None,
        clock: Clock = time.time,
        observer: SessionObserver | None = None,
        cluster: str | Cluster = "auto",
        causal_reads: bool = True,
        lease_ttl: float = 15.0,
        coalesce_reads: bool = True,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise SessionConfigError("pass exactly one of dsn= or pool=")
        self._dsn: DSN | None = parse_dsn(dsn) if dsn is not None else None
        self._pool: Any = pool
        self._owns_pool = pool is None
        self.table = sql.check_table_name(table)
        self.sql = sql.statements(table)
        if max_lifetime < 1:
            raise SessionConfigError("max_lifetime must be at least 1 second")
        if absolute_lifetime is not None and absolute_lifetime < 1:
            raise SessionConfigError("absolute_lifetime must be None or at least 1 second")
        if rotation_grace < 0:
            raise SessionConfigError("rotation_grace must be >= 0 seconds")
        if lock_connections is not None and lock_connections < 1:
            raise SessionConfigError("lock_connections must be >= 1, or None for half the pool")
        if not 1 <= max_size <= sql.DATA_COLUMN_BYTES:
            raise SessionConfigError(f"max_size must be between 1 and {sql.DATA_COLUMN_BYTES}")
        if touch_after is None:
            touch_after = max(1, max_lifetime // 10)
        if not 0 <= touch_after <= max_lifetime:
            raise SessionConfigError("touch_after must be between 0 and max_lifetime")
        if gc_interval is not None and gc_interval <= 0:
            raise SessionConfigError("gc_interval must be positive, or None to disable sweeps")
        if gc_batch_size < 1 or write_retries < 0 or gc_pause < 0:
            raise SessionConfigError("gc_batch_size must be >= 1, write_retries and gc_pause >= 0")
        self.max_lifetime = max_lifetime
        # Below max_lifetime is allowed: the absolute bound simply wins.
        self.absolute_lifetime = absolute_lifetime
        self.touch_after = touch_after
        #: How long a rotated-away id is remembered as "superseded" (a tombstone row).
        self.rotation_grace = rotation_grace
        self._lock_connections = lock_connections
        self._lock_slots: asyncio.Semaphore | None = None
        self.max_size = max_size
        self.create_table = create_table
        self.timeout = self._dsn.timeout if self._dsn and self._dsn.timeout else timeout
        self.write_retries = write_retries
        self.gc_interval = gc_interval
        self.gc_batch_size = gc_batch_size
        #: Seconds to rest between full sweep batches, so a big sweep does not starve
        #: the database of CPU for the requests being served meanwhile.
        self.gc_pause = gc_pause
        self.clock = clock
        #: Receives events for logs and metrics (see ``asgi_mysql_session.metrics``).
        self.observer = observer or SessionObserver()
        #: Statements run since creation by kind ("select", "insert", "update", "delete"...),
        #: cheap to read for metrics and tests.
        self.statements: Counter[str] = Counter()
        self._database = self._dsn.database if self._dsn else ""
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0  # the thread running _loop
        self._guard: asyncio.Task[None] | None = None  # closes the provider when _loop shuts down
        self._sweeper: ExpirySweeper | None = None
        #: One lock per session and process, so concurrent saves queue instead of starving.
        self.save_locks = KeyedLocks()
        self._request_locks = KeyedLocks()
        self._background: set[asyncio.Task[None]] = set()
        self._watchdog = Watchdog()
        #: "auto" detects at open(); "single" or "galera" forces the kind (tests, proxies).
        self._cluster_option = cluster_option(cluster)
        self.cluster: Cluster | None = None  # known once open
        #: On Galera: every pooled connection runs ``SET SESSION wsrep_sync_wait = 1`` once.
        self.causal_reads = causal_reads
        #: On Galera: leases (sweep, serialized requests) instead of node-local GET_LOCK.
        self.leases = Leases(self.table, lease_ttl)
        self._session_setup: str | None = None  # the statement each connection runs once
        self._cli = False  # set by the CLI: remedies in messages name its commands
        #: Reads of one event-loop turn share one SELECT (asgi_mysql_session.coalesce).
        self._coalescer = ReadCoalescer(self) if coalesce_reads else None

    # -- lifecycle -------------------------------------------------------------------

    @staticmethod
    def connect_kwargs() -> dict[str, Any]:
        """The aiomysql connection options the provider relies on, for pools you build yourself."""
        return {
            "autocommit": True,
            "client_flag": CLIENT.FOUND_ROWS,
            "charset": "utf8mb4",
            "init_command": f"SET SESSION sql_mode = '{_SQL_MODE}'",
        }

    @property
    def is_open(self) -> bool:
        return self._opened

    async def open(self) -> None:
        """Build the pool and check (or create) the table. Safe to call more than once.

        The provider belongs to the event loop that opened it, and closes itself when that
        loop shuts down (``asyncio.run``, anyio, Starlette's ``TestClient`` used without
        ``with`` and pytest-asyncio cancel every task first): the next use on another loop
        opens it again there, so no connection outlives its loop.
        """
        if self._opened:
            if self._loop is None or not self._loop.is_closed():
                return
            self._abandon()  # its loop ended without shutting it down
        loop = require_asyncio()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            self._loop = loop
            self._thread = get_ident()
            if self._pool is None:
                self._pool = await self._create_pool()
            try:
                await self._check_pool_flags()
                await self._check_table()
            except BaseException:
                await self._close_pool()
                raise
            self._opened = True
            self._guard = loop.create_task(self._close_with_loop(), name="asgi_mysql_session loop guard")
            if self.gc_interval is not None:
                from .gc import ExpirySweeper

                self._sweeper = ExpirySweeper(self, interval=self.gc_interval)
                self._sweeper.start()

    async def close(self) -> None:
        """Stop the sweeper and close the pool (only if the provider built it)."""
        guard, self._guard = self._guard, None
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
            await asyncio.wait([guard])  # never left pending on a loop about to close
        if self._sweeper is not None:
            await self._sweeper.stop()
            self._sweeper = None
        if self._opened:
            self._opened = False
            await self._close_pool()
            self._watchdog.close()
            self._loop = None
            self._open_lock = None  # an asyncio.Lock may be bound to this loop

    async def _close_with_loop(self) -> None:
        """Wait for the loop's shutdown (which cancels every task), then close the provider."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if self._guard is asyncio.current_task():
                self._guard = None
                await self.close()
            raise

    def _abandon(self) -> None:
        """Forget state tied to a loop that closed while the provider was open on it.

        Its connections cannot be closed through that loop any more (asyncio raises "Event
        loop is closed"), so their sockets are closed directly and aiomysql is told they
        are gone, which also keeps its ``__del__`` quiet.
        """
        if self._owns_pool and self._pool is not None:
            pool = self._pool
            for conn in [*getattr(pool, "_free", ()), *getattr(pool, "_used", ())]:
                _close_on_dead_loop(conn)
            self._pool = None
        sweeper_task = self._sweeper._task if self._sweeper is not None else None
        for task in (self._guard, sweeper_task):
            if task is not None:  # never ran to its end: asyncio would log it at collection
                task._log_destroy_pending = False  # type: ignore[attr-defined]
        self._opened = False
        self._loop = None
        self._guard = None
        self._sweeper = None
        self._open_lock = None
        self._lock_slots = None
        self._background = set()
        self._watchdog = Watchdog()

    async def _reopen_if_loop_ended(self) -> None:
        """Reopen on the running loop when the one it was opened on has closed meanwhile."""
        if self._opened and self._loop is not None and self._loop.is_closed() and self._owns_pool:
            await self.open()

    async def __aenter__(self) -> MySQLSessionProvider:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _create_pool(self) -> Any:
        dsn = self._dsn
        assert dsn is not None
        kwargs = self.connect_kwargs()
        kwargs["init_command"] += f", SESSION innodb_lock_wait_timeout = {max(1, int(self.timeout))}"
        several = len(dsn.hosts) > 1 and not dsn.unix_socket
        pool = ConnectionPool(
            dsn.pool_min,
            dsn.pool_max,
            dsn.pool_recycle,
            hosts=dsn.hosts if several else None,
            host_order=dsn.host_order,
            on_host_down=self.observer.failover,
            host=dsn.host,
            port=dsn.port,
            user=dsn.user,
            password=dsn.password,
            db=dsn.database,
            unix_socket=dsn.unix_socket,
            connect_timeout=dsn.connect_timeout,
            **kwargs,
        )
        try:
            await _bounded(pool.fill(), max(self.timeout, dsn.connect_timeout))
            return pool
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                raise self._failed(f"cannot connect to {dsn.redacted()}: no answer", "timeout") from exc
            if isinstance(exc, (pymysql.err.MySQLError, OSError)):
                raise self._failed(f"cannot connect to {dsn.redacted()}: {exc}", "connection") from exc
            raise

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, (None if self._owns_pool else self._pool)
        if pool is None or not self._owns_pool:
            return
        pool.close()
        try:
            await _bounded(pool.wait_closed(), self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pool.terminate()

    async def _check_pool_flags(self) -> None:
        async with self._connection() as link:
            if not link.conn.client_flag & CLIENT.FOUND_ROWS:
                raise SessionConfigError(
                    "the aiomysql pool must be created with client_flag=CLIENT.FOUND_ROWS "
                    "(and autocommit=True): use MySQLSessionProvider.connect_kwargs()"
                )
            if not link.conn.get_autocommit():
                raise SessionConfigError("the aiomysql pool must be created with autocommit=True")
            if not self._database:
                _, rows = await link.execute("SELECT DATABASE()")
                self._database = rows[0][0] or ""
            await self._detect_cluster(link)

    async def _detect_cluster(self, link: _Link) -> None:
        """Galera or a single server (``cluster="auto"``); one uncounted statement at open."""
        cluster = self._cluster_option
        if cluster is None:
            try:
                cluster = await _bounded(detect(link.conn), self.timeout)
            except (asyncio.TimeoutError, TimeoutError) as exc:
                link.broken = True
                message = f"the database did not answer within {self.timeout:g}s"
                raise self._failed(message, "timeout") from exc
            except pymysql.err.MySQLError as exc:
                link.broken = not _is_server_error(exc)
                message = f"cannot tell whether this is a Galera cluster: {exc}"
                raise self._failed(message, "statement") from exc
        self.cluster = cluster
        if cluster is Cluster.GALERA:
            self._session_setup = CAUSAL_READS if self.causal_reads else None
            logger.info(
                "Galera cluster: %s, leases in `%s`",
                "causal reads (wsrep_sync_wait=1)" if self.causal_reads else "causal reads off",
                self.leases.sql.table,
            )
        else:
            self._session_setup = None

    async def _check_table(self) -> None:
        async with self._connection() as link:
            _, rows = await link.execute(self.sql.columns, (self.table,))
            if not rows and self.create_table:
                await link.execute(sql.create_table(self.table))
                _, rows = await link.execute(self.sql.columns, (self.table,))
            if rows and self.cluster is Cluster.GALERA:
                await self._check_lease_table(link)
        if not rows:
            raise self._failed(self._missing_table_message(), "schema", SessionSchemaError)
        found = {name.lower(): (dtype.lower(), nullable) for name, dtype, nullable in rows}
        wrong = [
            f"{column} ({dtype}{' NOT NULL' if column != 'session_owner' else ''})"
            for column, dtype in sql.REQUIRED_COLUMNS.items()
            if found.get(column, ("missing", ""))[0] != dtype
            or (column != "session_owner" and found[column][1] != "NO")
        ]
        if wrong:
            raise self._failed(
                f"table `{self.table}` in database `{self._database}` lacks or mistypes columns: "
                f"{', '.join(wrong)}; `asgi-mysql-session check --table {self.table}` says what "
                f"differs and `asgi-mysql-session upgrade --table {self.table}` converts a table "
                "made by the Go provider",
                "schema",
                SessionSchemaError,
            )

    async def _check_lease_table(self, link: _Link) -> None:
        """On Galera the lease table must be there (or be created with ``create_table``)."""
        lease_table = self.leases.sql.table
        _, rows = await link.execute(self.sql.columns, (lease_table,))
        if not rows and self.create_table:
            await link.execute(sql.create_lease_table(self.table))
            _, rows = await link.execute(self.sql.columns, (lease_table,))
        if not rows:
            raise self._failed(
                f"lease table `{lease_table}` does not exist in database `{self._database}`, and this "
                "is a Galera cluster, where named locks are node-local: create it with "
                f"`asgi-mysql-session init --table {self.table}` (or create_table=True), or print its "
                f"DDL with `asgi-mysql-session init --print-sql --galera --table {self.table}`",
                "schema",
                SessionSchemaError,
            )

    def _missing_table_message(self, *, cli: bool = False) -> str:
        where = f"session table `{self.table}` does not exist in database `{self._database}`"
        if cli or self._cli:
            return f"{where}: create it with `asgi-mysql-session init --table {self.table}`"
        return (
            f"{where}: pass create_table=True to MySQLSessionProvider, run "
            f"`asgi-mysql-session init --table {self.table}`, or have a DBA apply the DDL that "
            f"`asgi-mysql-session init --print-sql --table {self.table}` prints"
        )

    def _failed(
        self, message: str, kind: str, error: type[SessionBackendError] = SessionBackendError
    ) -> SessionBackendError:
        """Log a failure once, count it, and make the error to raise (cause chained by caller)."""
        logger.warning("session backend error: %s", message)
        self.observer.database_error(kind)
        return error(message)

    # -- connections -----------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Link]:
        """Check out a connection for several statements, each under its own deadline.

        For sweeps, locks and maintenance; it always goes back to the pool.
        """
        await self._reopen_if_loop_ended()
        self._check_usable()
        pool = self._pool
        try:
            conn = await _bounded(pool.acquire(), self.timeout)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise self._failed(
                f"no database connection within {self.timeout:g}s (pool exhausted or database unreachable)",
                "timeout",
            ) from exc
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._failed(f"cannot connect to the database: {exc}", "connection") from exc
        link = _Link(conn, self, True)
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

    def _node_lost(self, conn: Any, reason: str) -> None:
        """A statement failed as if the server were gone: with several hosts, mark it down."""
        pool = self._pool
        if isinstance(pool, ConnectionPool):
            pool.connection_failed(conn, reason)

    def _check_usable(self) -> None:
        if self._pool is None:
            raise SessionError("the provider is not open: await provider.open() first")
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            raise SessionError(
                "the provider is open on another event loop that is still open: close it there "
                "first (it then reopens on this loop), or use one provider per loop"
            )

    def _give_back(self, pool: Any, link: _Link) -> None:
        """Return a connection to its pool; one in an unknown state is closed, not reused."""
        conn = link.conn
        if link.broken:
            conn.close()
        pool.release(conn)
        if link.broken and not isinstance(pool, ConnectionPool):
            # aiomysql's pool does not wake waiters when a closed connection comes back.
            task = asyncio.get_running_loop().create_task(_wake(pool))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _execute(self, statement: str, args: Sequence[Any] = ()) -> tuple[int, Sequence[Any]]:
        """One statement under one deadline that covers acquiring the connection too.

        Inside ``session_lock`` the statement runs on the connection holding the lock, so a
        serialized request never needs a second connection (and cannot deadlock the pool).
        This is every request's path, so it is written out flat (no context managers) and
        bounded by the provider's watchdog rather than a timer of its own.
        """
        held = _HELD_LINK.get()
        if held is not None and held.provider is self and not held.broken:
            assert held.shared is not None
            async with held.shared:  # the handler may run statements from several tasks
                return await held.execute(statement, args)
        pool = self._pool
        # Not asyncio.get_running_loop(): on Python 3.11 it makes a getpid() system call,
        # twice per statement with the pool's. The opened loop's current task is this
        # task only when that loop runs this code; otherwise take the checked, slow way.
        loop = self._loop
        task = asyncio.current_task(loop) if loop is not None and self._thread == get_ident() else None
        if loop is None or task is None or pool is None:
            await self._reopen_if_loop_ended()
            self._check_usable()
            pool = self._pool
            loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
        watchdog = self._watchdog
        token = watchdog.arm(loop, self.timeout, task)
        link: _Link | None = None
        try:
            for retried in (False, True):
                try:
                    conn = await pool.acquire()
                except (pymysql.err.MySQLError, OSError) as exc:
                    raise self._failed(f"cannot connect to the database: {exc}", "connection") from exc
                link = _Link(conn, self, False)
                setup = self._session_setup
                if setup is not None and getattr(conn, _SETUP_MARK, None) != setup:
                    await self._set_up(link)
                try:
                    return await link.execute(statement, args)
                except SessionBackendError as exc:
                    if retried or not (
                        link.broken and getattr(pool, "several_hosts", False) and _lost_read(statement, exc)
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
                raise self._failed(
                    f"the database did not answer within {self.timeout:g}s "
                    "(pool exhausted or database unreachable)",
                    "timeout",
                ) from exc
            raise
        finally:
            watchdog.disarm(token)
            if link is not None:
                self._give_back(pool, link)

    async def _set_up(self, link: _Link) -> None:
        """Once per connection (Galera): the session settings, e.g. causal reads."""
        setup = self._session_setup
        assert setup is not None
        await link.execute(setup)
        setattr(link.conn, _SETUP_MARK, setup)

    # -- time and ids ----------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def born_after(self, now: int) -> int:
        """Rows created at or before this are past the absolute lifetime (0: no bound)."""
        absolute = self.absolute_lifetime
        return max(now - absolute, 0) if absolute is not None else 0

    def cap(self, created: int) -> int | None:
        """The absolute deadline of a session created at ``created``, if there is one.

        0 means unknown (a row written by something else, e.g. mid-upgrade): only the idle
        lifetime applies to it, rather than a cap in 1970 that would end it on its next write.
        """
        if self.absolute_lifetime is None or created == 0:
            return None
        return created + self.absolute_lifetime

    def deadline(self, created: int, now: int) -> int:
        """Idle deadline from now, capped by the absolute lifetime since creation."""
        cap = self.cap(created)
        return now + self.max_lifetime if cap is None else min(now + self.max_lifetime, cap)

    @staticmethod
    def new_session_id() -> str:
        """A fresh id: 256 bits from ``secrets``, URL-safe."""
        return new_session_id()

    @staticmethod
    def _checked(sid: str, what: str = "sid") -> str:
        if not is_well_formed(sid):
            raise InvalidSessionId(
                f"{what} is not a well-formed session id (16-128 characters of A-Z a-z 0-9 - _); "
                "ids from clients go through provider.load() or is_valid_session_id() first"
            )
        return sid

    # -- the Go provider's API -------------------------------------------------------
    #
    # read/exist/regenerate/destroy take ids your own code minted (new_session_id) and
    # refuse malformed ones with InvalidSessionId; load() is for ids from clients.

    async def read(self, sid: str) -> SessionStore:
        """The live session under ``sid``, or an empty new store bound to it (one SELECT).

        Like the Go provider's Read, an unknown ``sid`` is adopted: a later save stores the
        session under it. For ids that come from clients use :meth:`load`, which never adopts.
        """
        from .store import SessionStore

        row = await self.fetch(hash_id(self._checked(sid)))
        if row is not None:
            self.observer.session_loaded()
            return SessionStore.from_row(self, sid, row)
        return SessionStore(self, sid)

    async def load(self, sid: str | None) -> SessionStore:
        """The session a client's id names, with the middleware's rules (one SELECT at most).

        A malformed, unknown, expired or logged-out id gives an empty store whose id is
        minted fresh if it is ever saved: a client can never choose its own id. A
        superseded id (rotated away by a login) gives an empty store that refuses to save
        (``store.superseded``), so a late request cannot replace the newer session.
        """
        from .store import SessionStore

        store = SessionStore(self, "")
        await self._load_into(store, sid)
        return store

    async def _load_into(self, store: SessionStore, sid: str | None) -> None:
        """``load`` into a store made earlier (the middleware hands it out before reading)."""
        key = hash_id(sid) if sid is not None and is_well_formed(sid) else None
        row = await self.lookup(key) if key is not None else None
        if row is None or row.superseded:
            if sid is not None:
                logger.info(
                    "%s session id %s presented", "superseded" if row else "unknown or expired", log_id(sid)
                )
                self.observer.unknown_id()
            store._load(None, None, superseded=row is not None)
        else:
            assert sid is not None
            self.observer.session_loaded()
            store._load(sid, row, key)

    async def exist(self, sid: str) -> bool:
        return await self._live(hash_id(self._checked(sid)))

    async def regenerate(self, old_sid: str, new_sid: str) -> SessionStore:
        """Move the session to ``new_sid`` at once; the old id is dead (superseded) at once."""
        from .store import SessionStore

        self._checked(new_sid, "new_sid")
        if await self.rename(hash_id(self._checked(old_sid, "old_sid")), hash_id(new_sid)):
            row = await self.fetch(hash_id(new_sid))
            if row is not None:
                return SessionStore.from_row(self, new_sid, row)
        return SessionStore(self, new_sid)

    async def destroy(self, sid: str) -> bool:
        """Delete the session; True if a row was there."""
        deleted = await self.delete(hash_id(self._checked(sid)))
        self.observer.sessions_destroyed(int(deleted))
        return deleted

    async def all(self) -> int:
        """How many live (unexpired) sessions there are."""
        now = self.now()
        _, rows = await self._execute(self.sql.count, (now, self.born_after(now)))
        return int(rows[0][0])

    async def gc(self, batch_size: int | None = None) -> int:
        """Delete expired rows in batches now; returns how many."""
        swept = await self.sweep(batch_size=batch_size)
        return swept or 0

    # -- owners ("log out everywhere") ----------------------------------------------

    async def sessions_of(self, owner: str) -> list[OwnedSession]:
        now = self.now()
        _, rows = await self._execute(self.sql.of_owner, (owner, now, self.born_after(now)))
        return [OwnedSession(key, int(created), int(expiry)) for key, created, expiry in rows]

    async def destroy_owner(self, owner: str) -> int:
        """End every session bound to ``owner`` in one statement; returns how many."""
        count, _ = await self._execute(self.sql.delete_owner, (owner,))
        self.observer.sessions_destroyed(count)
        return count

    # -- serialized requests -----------------------------------------------------------

    def _lock_semaphore(self) -> asyncio.Semaphore:
        """Lock holders share at most half the pool, so ordinary requests always find one.

        A serialized request holds its connection for the whole handler (slow clients
        included); without this cap, holders of live sessions could take every connection.
        """
        slots = self._lock_slots
        if slots is None:
            size = self._lock_connections
            if size is None:
                pool_max = self._dsn.pool_max if self._dsn else int(getattr(self._pool, "maxsize", 2))
                size = max(1, pool_max // 2)
            slots = self._lock_slots = asyncio.Semaphore(size)
        return slots

    @asynccontextmanager
    async def session_lock(self, key_hash: str, timeout: float) -> AsyncIterator[bool]:
        """Hold the session's lock: requests of one session run one at a time, across processes.

        Yields False, holding nothing, when no live session has this key: the lock is only
        taken for a live session (by one statement that checks and locks), so an id made up
        by a client never holds a connection past that statement. Waiters of this process
        queue on an asyncio lock first, then for one of the lock connections (at most half
        the pool, ``lock_connections``), so only one of them holds a pooled connection for
        the server-side named lock (GET_LOCK). Raises ``SessionLockTimeout`` when the lock is
        not had within ``timeout`` seconds.
        """
        local = self._request_locks
        slots = self._lock_semaphore()
        deadline = time.monotonic() + timeout
        async with AsyncExitStack() as holding:
            try:
                await _bounded(local.acquire(key_hash), timeout)
                holding.callback(local.release, key_hash)
                await _bounded(slots.acquire(), max(0.0, deadline - time.monotonic()))
                holding.callback(slots.release)
            except (asyncio.TimeoutError, TimeoutError):
                raise SessionLockTimeout(f"session busy: no lock within {timeout:g}s") from None
            locked = self._leased if self.cluster is Cluster.GALERA else self._locked
            held = await holding.enter_async_context(locked(key_hash, max(0.0, deadline - time.monotonic())))
            if not held:
                await holding.aclose()  # an unknown id holds nothing while its request runs
            yield held

    @asynccontextmanager
    async def _locked(self, key_hash: str, wait: float) -> AsyncIterator[bool]:
        name = f"asgi_mysql_session:{key_hash[:40]}"
        now = self.now()
        async with self._connection() as link:
            _, rows = await link.execute(
                self.sql.lock_if_live, (name, wait, key_hash, now, self.born_after(now)), extra_time=wait
            )
            if not rows:  # no live session: nothing to serialize, nothing held
                yield False
                return
            if rows[0][0] != 1:
                raise SessionLockTimeout(f"session busy: no lock within {wait:g}s")
            link.shared = asyncio.Lock()
            token = _HELD_LINK.set(link)
            try:
                yield True
            except BaseException:
                link.broken = True  # closing the connection frees the named lock
                raise
            finally:
                _HELD_LINK.reset(token)
            try:
                await link.execute(self.sql.release_lock, (name,))
            except SessionError:
                link.broken = True  # the response is out: free the lock by closing

    @asynccontextmanager
    async def _leased(self, key_hash: str, wait: float) -> AsyncIterator[bool]:
        """``_locked`` on Galera: a per-session lease row instead of a node-local named lock.

        A causal read first checks that the session is live (a made-up id claims nothing),
        then the lease is claimed, polling with backoff for up to ``wait`` seconds. No
        connection is held while the handler runs: the lease is a row, renewed every third of
        ``lease_ttl`` while the request lasts and deleted (by its holder only) at the end.
        Common case: SELECT + INSERT + DELETE, three statements for GET_LOCK's two.
        """
        if not await self._live(key_hash):
            yield False
            return
        name = f"session:{key_hash}"
        holder = new_holder()
        await self.leases.wait(self._execute, name, holder, wait)
        async with self.leases.kept(self._execute, name, holder):
            yield True

    async def _live(self, key_hash: str) -> bool:
        """Whether a live session has this key (one SELECT)."""
        now = self.now()
        _, rows = await self._execute(self.sql.exist, (key_hash, now, self.born_after(now)))
        return bool(rows)

    # -- sweeping ----------------------------------------------------------------------

    def lock_name(self) -> str:
        digest = hashlib.sha256(f"{self._database}.{self.table}".encode()).hexdigest()[:40]
        return f"asgi_mysql_session:{digest}"

    async def sweep(
        self,
        *,
        batch_size: int | None = None,
        exclusive: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> int | None:
        """Delete expired rows in batches of ``batch_size`` until none are left.

        With ``exclusive`` the sweep first takes a named lock (GET_LOCK) so that only one
        process sweeps a table at a time; it returns None when another holds it. On Galera,
        where named locks are node-local, it holds the table's ``sweep`` lease instead
        (renewed while it runs, deleted at the end): one sweeper across every node.
        """
        if exclusive and self.cluster is Cluster.GALERA:
            holder = new_holder()
            if not await self.leases.claim(self._execute, "sweep", holder):
                return None
            async with self.leases.kept(self._execute, "sweep", holder):
                return await self.sweep(batch_size=batch_size, on_batch=on_batch)
        batch = batch_size or self.gc_batch_size
        total = 0
        started = time.perf_counter()
        async with self._connection() as link:
            if exclusive:
                _, rows = await link.execute(self.sql.get_lock, (self.lock_name(),))
                if not rows or rows[0][0] != 1:
                    return None
            try:
                while True:
                    deleted, _ = await link.execute(self.sql.gc_batch, (self.now(), batch))
                    total += deleted
                    if on_batch is not None:
                        on_batch(deleted)
                    if deleted < batch:
                        break
                    if self.gc_pause:
                        await asyncio.sleep(self.gc_pause)
            except BaseException:
                # Cancelled or failed mid-sweep: closing the connection frees the named
                # lock without another round trip that could hang or mask the error.
                link.broken = True
                raise
            if exclusive:
                await link.execute(self.sql.release_lock, (self.lock_name(),))
        self.observer.sweep(total, time.perf_counter() - started)
        return total

    # -- row operations used by SessionStore ----------------------------------------

    async def lookup(self, key_hash: str) -> Row | None:
        """The row in policy, tombstones included (``row.superseded``), or None.

        A row that cannot be decoded is logged and removed.
        """
        now = self.now()
        loop = self._loop
        if (
            self._coalescer is not None
            and loop is not None
            and self._thread == get_ident()
            and asyncio.current_task(loop) is not None
            and _HELD_LINK.get() is None  # a serialized request reads on its locked connection
        ):
            found = await self._coalescer.select(key_hash, now, self.born_after(now), loop)
        else:
            found = await self._select(key_hash, now, self.born_after(now))
        if found is None:
            return None
        data, expiry, version, created, owner = found
        try:
            values = decode(data) if version else {}
        except SessionDecodeError as exc:
            logger.warning("dropping undecodable session %s: %s", key_hash[:12], exc)
            await self.delete(key_hash)
            return None
        return Row(data, values, expiry, version, created, owner)

    async def _select(self, key_hash: str, now: int, born_after: int) -> sql.Unpacked | None:
        """The fields of the row in policy (one SELECT of one packed column), or None."""
        _, rows = await self._execute(self.sql.select, (key_hash, now, born_after))
        if not rows:
            return None
        value = rows[0][0]
        if value is not None:
            return sql.unpack(value)
        # Too big to pack: read the columns one by one (a second SELECT, for such rows only).
        _, rows = await self._execute(self.sql.select_columns, (key_hash, now, born_after))
        if not rows:
            return None
        data, expiry, version, created, owner = rows[0]
        return bytes(data), int(expiry), int(version), int(created), owner

    async def fetch(self, key_hash: str) -> Row | None:
        """The live row, or None (unknown, expired, past the policy, or superseded)."""
        row = await self.lookup(key_hash)
        return None if row is None or row.superseded else row

    async def insert(self, key_hash: str, data: bytes, expiry: int, created: int, owner: str | None) -> None:
        await self._execute(self.sql.insert, (key_hash, data, expiry, created, owner))

    async def update(self, key_hash: str, data: bytes, expiry: int, owner: str | None, version: int) -> bool:
        """Conditional write; False if the row moved on (other version) or is gone."""
        now = self.now()
        count, _ = await self._execute(
            self.sql.update, (data, expiry, owner, key_hash, version, now, self.born_after(now))
        )
        return count == 1

    async def touch(self, key_hash: str, expiry: int) -> bool:
        now = self.now()
        count, _ = await self._execute(self.sql.touch, (expiry, key_hash, now, self.born_after(now)))
        return count == 1

    async def clamp(self, key_hash: str, expiry: int) -> bool:
        """Lower the deadline to ``expiry`` (a lowered max_lifetime); never raises it."""
        now = self.now()
        count, _ = await self._execute(self.sql.clamp, (expiry, key_hash, now, self.born_after(now)))
        return count == 1

    async def rename(self, old_hash: str, new_hash: str) -> bool:
        """Move a live row to a new key and leave a tombstone under the old one, atomically.

        The tombstone lets a late response about the old id leave the client's cookie
        alone (it is superseded, not unknown) for ``rotation_grace`` seconds; it never
        opens the session. Four statements on one connection: BEGIN, UPDATE, INSERT, COMMIT
        (two without a grace). A deadlock rolls the whole transaction back and it is retried.
        """
        for attempt in range(_STATEMENT_RETRIES):
            now = self.now()
            try:
                return await self._rename(old_hash, new_hash, now)
            except _Deadlock:
                if attempt + 1 == _STATEMENT_RETRIES:
                    raise self._failed("rotation kept deadlocking", "statement") from None
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _rename(self, old_hash: str, new_hash: str, now: int) -> bool:
        args = (new_hash, old_hash, now, self.born_after(now))
        if not self.rotation_grace:
            count, _ = await self._execute(self.sql.rename, args)
            return count == 1
        async with self._connection() as link:
            try:
                await link.execute("BEGIN", retry=False)
                count, _ = await link.execute(self.sql.rename, args, retry=False)
                if count == 1:
                    await link.execute(self.sql.tombstone, (old_hash, now + self.rotation_grace), retry=False)
                await link.execute("COMMIT", retry=False)
            except SessionBackendError as exc:
                link.broken = True  # never hand back a connection inside a transaction
                cause = exc.__cause__
                if isinstance(cause, pymysql.err.MySQLError) and cause.args and cause.args[0] in _RETRYABLE:
                    raise _Deadlock from exc
                raise
            except BaseException:
                link.broken = True
                raise
        return count == 1

    async def delete(self, key_hash: str) -> bool:
        count, _ = await self._execute(self.sql.delete, (key_hash,))
        return count == 1

    async def shorten(self, max_lifetime: int | None, absolute_lifetime: int | None, batch_size: int) -> int:
        """Apply a (lowered) lifetime policy to every live row now, in batches; returns how many."""
        total = 0
        never = 2**32 - 1  # INT UNSIGNED's largest value: "no bound"
        while True:
            now = self.now()
            idle = now + max_lifetime if max_lifetime is not None else never
            absolute = absolute_lifetime if absolute_lifetime is not None else never
            changed, _ = await self._execute(
                self.sql.shorten, (idle, absolute, idle, absolute, now, batch_size)
            )
            total += changed
            if changed < batch_size:
                return total


class _Deadlock(Exception):
    """A transaction lost a deadlock (or lock wait) and was rolled back whole."""


def _close_on_dead_loop(conn: Any) -> None:
    """Close an aiomysql connection whose event loop has closed, without that loop."""
    writer, conn._writer, conn._reader = conn._writer, None, None
    transport = getattr(writer, "transport", None)
    sock = getattr(transport, "_sock", None)
    if sock is not None:
        transport._sock = None  # type: ignore[union-attr]
        transport._closing = True  # type: ignore[union-attr]  # StreamWriter.__del__ checks it
        sock.close()


async def _wake(pool: Any) -> None:
    async with pool._cond:
        pool._cond.notify()
