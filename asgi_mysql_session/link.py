"""One checked-out connection: a statement on it, its retries, and the error it becomes.

The gateway hands out links (``Gateway.connection()``) and runs every request's statement
on one; a link never outlives its checkout, and one whose connection is in an unknown state
(timed out, cancelled or failed mid-statement) is marked broken so the gateway closes it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from . import driver
from .driver import Connection
from .errors import SessionBackendError, SessionConflictError, SessionError, SessionSchemaError
from .literals import render
from .metrics import SessionObserver

logger = logging.getLogger("asgi_mysql_session")

T = TypeVar("T")
#: (matched rows, fetched rows) of one statement.
Result = tuple[int, Sequence[driver.Row]]

STATEMENT_RETRIES = 3


_KINDS: dict[str, str] = {}
_UNTIMED = SessionObserver.statement


async def retry_pause(attempt: int) -> None:
    """The jittered pause before running again what lost a deadlock (``attempt`` from 0)."""
    await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))


async def bounded(aw: Awaitable[T], seconds: float) -> T:
    async with asyncio.timeout(seconds):
        return await aw


def _kind(statement: str) -> str:
    """Statements are counted by their first word ("select", "update"...), cached per text."""
    kind = statement[:6].lower()
    if len(_KINDS) < 1000:  # the package's own statements; ad-hoc ones are not kept
        _KINDS[statement] = kind
    return kind


class Owner(Protocol):
    """What a link needs from the gateway that lent it."""

    timeout: float
    observer: SessionObserver
    statements: Counter[str]
    loop: asyncio.AbstractEventLoop | None

    def failed(
        self, message: str, kind: str, error: type[SessionBackendError] = SessionBackendError
    ) -> SessionBackendError: ...

    def node_lost(self, conn: Connection, reason: str) -> None: ...

    def missing_table(self) -> str: ...


class Link:
    """One checked-out connection; every statement on it is bounded and counted."""

    __slots__ = ("bounded", "broken", "conn", "gateway", "shared")

    def __init__(self, conn: Connection, gateway: Owner, bounded: bool) -> None:
        self.conn = conn
        self.gateway = gateway
        self.bounded = bounded  # False when the caller holds one deadline for the whole use
        self.broken = False
        self.shared: asyncio.Lock | None = None  # set while it holds a session lock

    async def execute(
        self, statement: str, args: Sequence[Any] = (), *, extra_time: float = 0.0, retry: bool = True
    ) -> Result:
        """Run one statement; returns (matched rows, fetched rows).

        ``extra_time`` widens the deadline for statements that wait server-side (GET_LOCK).
        ``retry=False`` inside a transaction: a deadlock rolls back the whole transaction,
        so retrying the one statement alone would run it outside of it.
        """
        gateway = self.gateway
        observer = gateway.observer
        conn = self.conn
        # The default hook ignores timings: skip the clock unless it was overridden.
        timed = getattr(observer.statement, "__func__", None) is not _UNTIMED
        for attempt in range(STATEMENT_RETRIES):
            try:
                started = time.perf_counter() if timed else 0.0
                loop = gateway.loop
                driver.mark_used(conn, loop.time() if loop is not None else time.monotonic())
                # Literals by literals.py, not the driver (its escaping differs by version); no args: % stays.
                running = driver.send(conn, render(statement, args))
                count = await (bounded(running, gateway.timeout + extra_time) if self.bounded else running)
                rows = driver.rows(conn)
                kind = _KINDS.get(statement) or _kind(statement)
                gateway.statements[kind] += 1
                if timed:
                    observer.statement(kind, time.perf_counter() - started)
                return int(count), rows
            except TimeoutError as exc:
                self.broken = True
                raise gateway.failed(
                    f"the database did not answer within {gateway.timeout:g}s", "timeout"
                ) from exc
            except driver.DriverError as exc:
                code = driver.error_code(exc)
                if code in driver.RETRYABLE and retry and attempt + 1 < STATEMENT_RETRIES:
                    logger.info("%s, retrying statement (attempt %d)", driver.RETRYABLE[code], attempt + 2)
                    await retry_pause(attempt)
                    continue
                raise self._sorted(exc, code) from exc
            except OSError as exc:
                self.broken = True
                gateway.node_lost(conn, str(exc) or type(exc).__name__)
                raise gateway.failed(f"connection failed: {exc}", "connection") from exc
            except BaseException:  # cancelled mid-statement: the connection state is unknown
                self.broken = True
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _sorted(self, exc: driver.DriverError, code: int | None) -> SessionError:
        """The package's error for a driver error (the link is marked broken if it is)."""
        gateway = self.gateway
        if not driver.is_server_error(exc) or code == driver.NODE_NOT_READY:
            self.broken = True
            gateway.node_lost(self.conn, str(exc))
        if code == driver.DUPLICATE_KEY:
            return SessionConflictError("a session with this id already exists")
        if code == driver.NO_SUCH_TABLE:
            return gateway.failed(gateway.missing_table(), "schema", SessionSchemaError)
        if code in driver.READ_ONLY:
            return gateway.failed(
                f"the database refused a write because it is read-only ({exc.args[1]}): "
                "session reads and writes must go to the primary, not a replica",
                "statement",
            )
        return gateway.failed(f"statement failed: {exc}", "connection" if self.broken else "statement")
