"""The one module that touches aiomysql, PyMySQL and asyncio internals, each with its reason.

Each private attribute or internal call of the drivers is used here and nowhere else, with
the reason it is worth it, and :func:`check` proves at ``open()`` that the installed
drivers still have every one of them: a driver release that removes one fails loudly at
start-up (``SessionConfigError`` naming it), never in the middle of a request.
``tests/test_driver.py`` holds one test per internal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import aiomysql
import pymysql
from aiomysql import Connection as Connection  # a connection of the driver: public, documented
from pymysql.constants import CLIENT

from .errors import SessionConfigError


class Pool(Protocol):
    """A pool: aiomysql's (one the user lends), or the package's ``ConnectionPool``."""

    @property
    def size(self) -> int: ...

    @property
    def freesize(self) -> int: ...

    @property
    def maxsize(self) -> int: ...

    def acquire(self) -> Awaitable[Connection]: ...

    def release(self, conn: Connection) -> object: ...

    def close(self) -> None: ...

    def wait_closed(self) -> Awaitable[None]: ...

    def terminate(self) -> None: ...


DriverError = pymysql.err.MySQLError
DriverWarning = pymysql.Warning
#: Needed so that an UPDATE that matched a row but changed nothing counts as matched.
FOUND_ROWS = CLIENT.FOUND_ROWS

#: MySQL errors after which the same statement may simply run again.
RETRYABLE = {1213: "deadlock", 1205: "lock wait timeout"}
#: "WSREP has not yet prepared node for application use": a Galera node that is not ready.
NODE_NOT_READY = 1047
#: Client errors of a connection that is gone (server gone away, lost connection).
CONNECTION_LOST = {2006, 2013, 2055}
#: A write refused by a read-only server (--read-only, a read-only transaction): a replica.
READ_ONLY = {1290, 1792}
DUPLICATE_KEY = 1062
NO_SUCH_TABLE = 1146
#: "Unknown system variable": MySQL asked for a MariaDB/Galera variable.
UNKNOWN_VARIABLE = 1193

Row = tuple[Any, ...]


def error_code(exc: BaseException) -> int | None:
    """The server's (or client's) error number of a driver error, else None."""
    if isinstance(exc, DriverError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def is_server_error(exc: BaseException) -> bool:
    """A server-side error (1000-1999, 3000+) leaves the connection usable; client errors don't."""
    code = error_code(exc)
    return code is not None and (1000 <= code < 2000 or code >= 3000)


def lost_read(statement: str, cause: BaseException | None) -> bool:
    """A SELECT that failed because its connection was lost (or its Galera node not ready)."""
    if isinstance(cause, DriverError):
        code = error_code(cause)
        lost = code in CONNECTION_LOST or code == NODE_NOT_READY
    else:
        lost = isinstance(cause, OSError) and not isinstance(cause, TimeoutError)
    return lost and statement.lstrip()[:6].upper() == "SELECT"


def new_connection(**kwargs: Any) -> Connection:
    """An unconnected connection: the pool keeps the object so it can close a cancelled handshake."""
    return Connection(**kwargs)


async def handshake(conn: Connection) -> None:
    """Connect ``conn``. INTERNAL ``Connection._connect()``: ``aiomysql.connect()`` makes the
    object inside and loses it when cancelled mid-handshake, leaving its socket open."""
    await conn._connect()


def send(conn: Connection, text: str) -> Awaitable[int]:
    """Run one statement; resolves to the matched-row count. INTERNAL ``Connection.query``
    (what aiomysql's Cursor calls): a cursor costs two futures, a context manager and four
    coroutines per statement, on the path every request takes."""
    return conn.query(text)  # type: ignore[no-any-return]


def rows(conn: Connection) -> Sequence[Row]:
    """The rows of the statement just run (empty for DML). PRIVATE ``_result``: read without
    a cursor (see :func:`send`)."""
    return conn._result.rows or ()


def mark_used(conn: Connection, now: float) -> None:
    """Count ``now`` as the connection's last use, as ``cursor()`` does, so ``pool_recycle``
    measures idle time. PRIVATE ``_last_usage`` (no setter): statements skip the cursor."""
    conn._last_usage = now


def reusable(conn: Connection, recycle: float, now: float) -> bool:
    """Whether a pooled connection may be handed out: open, no EOF or error from the server,
    idle for at most ``recycle`` seconds (negative: forever). PRIVATE ``_reader``: aiomysql
    has no accessor for its stream; ``eof_received`` (set even when MySQL 8 left an error
    packet before closing, which ``at_eof()`` misses) and ``exception()`` are public."""
    reader = conn._reader
    if reader is None or conn.closed or reader.eof_received or reader.exception() is not None:
        return False
    return recycle < 0 or now - conn.last_usage <= recycle


def close_on_dead_loop(conn: Connection) -> None:
    """Close a connection whose event loop has closed, without that loop (which would raise
    "Event loop is closed"). PRIVATE ``_writer``/``_reader`` are cleared so aiomysql's
    ``__del__`` stays quiet; the transport's PRIVATE ``_sock`` is closed directly and its
    ``_closing`` set, which ``StreamWriter.__del__`` checks."""
    writer, conn._writer, conn._reader = conn._writer, None, None
    transport = getattr(writer, "transport", None)
    sock = getattr(transport, "_sock", None)
    if sock is not None:
        transport._sock = None  # type: ignore[union-attr]
        transport._closing = True  # type: ignore[union-attr]
        sock.close()


def pooled(pool: Pool) -> list[Connection]:
    """Every connection of a pool, idle or in use (to close them when their loop is gone).
    PRIVATE ``_free``/``_used`` of aiomysql's Pool (ours has the same two)."""
    return [*getattr(pool, "_free", ()), *getattr(pool, "_used", ())]


async def wake(pool: Pool) -> None:
    """Wake a waiter of an aiomysql pool. PRIVATE ``_cond``: its ``release()`` of a closed
    connection frees a place without telling the tasks waiting for one."""
    cond: asyncio.Condition = pool._cond  # type: ignore[attr-defined]
    async with cond:
        cond.notify()


def never_log_pending(task: asyncio.Task[Any]) -> None:
    """Keep asyncio from logging "Task was destroyed but it is pending!" for a task whose
    loop closed under it (the provider gives such tasks up). PRIVATE asyncio
    ``Task._log_destroy_pending``: there is no public way to say so."""
    task._log_destroy_pending = False  # type: ignore[attr-defined]


def check(conn: Connection, pool: Pool | None = None) -> None:
    """Raise ``SessionConfigError`` if the installed drivers lack an internal used here.

    Run once when a provider opens, on a live connection (the stream exists only then);
    ``pool`` is an aiomysql pool the user lent, if any.
    """
    missing = [
        name
        for name, present in (
            ("aiomysql Connection._connect()", callable(getattr(conn, "_connect", None))),
            ("aiomysql Connection.query()", callable(getattr(conn, "query", None))),
            ("aiomysql Connection._result", hasattr(conn, "_result")),
            ("aiomysql Connection._last_usage", hasattr(conn, "_last_usage")),
            ("aiomysql Connection._reader", hasattr(conn, "_reader")),
            ("aiomysql Connection._writer", hasattr(conn, "_writer")),
            ("aiomysql _StreamReader.eof_received", hasattr(getattr(conn, "_reader", None), "eof_received")),
            ("aiomysql Pool._cond", pool is None or hasattr(pool, "_cond")),
        )
        if not present
    ]
    if missing:
        raise SessionConfigError(
            f"aiomysql {aiomysql.__version__} / PyMySQL {pymysql.__version__} lack what "
            f"asgi_mysql_session relies on: {', '.join(missing)}; install versions it supports "
            "(see its pyproject.toml)"
        )
