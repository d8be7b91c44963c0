"""Shared fixtures: a real MariaDB, one fresh table per test, and a clock the tests move."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import pymysql
import pytest

from asgi_mysql_session import MySQLSessionProvider, SaveResult, SessionStore, ddl
from asgi_mysql_session.coordination import Cluster, Leases
from asgi_mysql_session.dsn import parse_dsn
from asgi_mysql_session.gateway import Gateway, PoolState
from asgi_mysql_session.metrics import SessionObserver
from asgi_mysql_session.rows import SessionRows
from asgi_mysql_session.rules import Clock, Rules
from asgi_mysql_session.table import SessionTable
from asgi_mysql_session.watchdog import Watchdog

MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def admin_connection() -> pymysql.Connection:  # type: ignore[type-arg]
    return pymysql.connect(**parse_dsn(MYSQL_URL).pymysql_args(), autocommit=True)


class Database:
    """Synchronous side door to the server, for looking at rows and counting statements."""

    def __init__(self) -> None:
        self.conn = admin_connection()

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def counters(self) -> dict[str, int]:
        rows = self.query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select','Com_insert','Com_update','Com_delete')"
        )
        return {str(name)[4:].lower(): int(str(value)) for name, value in rows}


class Counted(Protocol):
    """A provider or a gateway: both count the statements they send, by kind."""

    @property
    def statements(self) -> Counter[str]: ...


class StatementCounter:
    """Counts the statements a provider (or a gateway) ran between ``start()`` and ``delta()``.

    The provider counts every statement it sends (tests/test_statement_counts.py checks that
    the count agrees with the server's own Com_* counters).
    """

    def __init__(self, provider: Counted) -> None:
        self.provider = provider
        self.before = dict(provider.statements)

    def start(self) -> None:
        self.before = dict(self.provider.statements)

    def delta(self) -> dict[str, int]:
        after = self.provider.statements
        return {k: after[k] - self.before.get(k, 0) for k in after if after[k] - self.before.get(k, 0)}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db() -> Iterator[Database]:
    database = Database()
    yield database
    database.conn.close()


@pytest.fixture
def statements(provider: MySQLSessionProvider) -> StatementCounter:
    return StatementCounter(provider)


@pytest.fixture
def table(db: Database) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    db.query(f"DROP TABLE IF EXISTS `{name}`")


class Pooled(Protocol):
    def pool_state(self) -> PoolState: ...


def assert_no_connection_checked_out(provider: Pooled) -> None:
    """Nothing is checked out of the pool of a provider (or a gateway)."""
    in_use = provider.pool_state().in_use
    assert not in_use, f"{in_use} connection(s) still checked out of the pool"


def provider_on(table: str, clock: FakeClock, **options: Any) -> MySQLSessionProvider:
    """A provider of the test's table and clock (created if missing, no background sweep
    unless ``gc_interval`` says otherwise), with the options the test is about."""
    options.setdefault("gc_interval", None)
    return MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, clock=clock, **options)


@pytest.fixture
async def provider(table: str, clock: FakeClock) -> AsyncIterator[MySQLSessionProvider]:
    p = provider_on(table, clock)
    await p.open()
    yield p
    assert_no_connection_checked_out(p)
    await p.close()


# -- the parts under the provider, built directly (for their own tests) ---------------------


def new_gateway(
    dsn: str = MYSQL_URL,
    *,
    timeout: float = 5.0,
    cluster: Cluster | None = None,
    causal_reads: bool = True,
    observer: SessionObserver | None = None,
) -> Gateway:
    """A gateway on its own pool (open it, then close it)."""
    return Gateway(
        parse_dsn(dsn),
        None,
        timeout=timeout,
        observer=observer or SessionObserver(),
        cluster=cluster,
        causal_reads=causal_reads,
    )


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    opened = new_gateway()
    await opened.open()
    yield opened
    assert_no_connection_checked_out(opened)
    await opened.close()


def table_on(
    gateway: Gateway,
    name: str,
    clock: Clock = time.time,
    *,
    coalesce_reads: bool = True,
    lazy_values: bool = True,
    observer: SessionObserver | None = None,
    **rules: Any,
) -> SessionTable:
    """The rows of table ``name`` (which must exist) through ``gateway``, under ``rules``
    (``Rules``' defaults are the provider's)."""
    return SessionTable(
        gateway,
        name,
        Rules(clock=clock, **rules),
        observer or SessionObserver(),
        Leases(name, 15.0),
        coalesce_reads=coalesce_reads,
        lazy_values=lazy_values,
        gc_batch_size=1000,
        gc_pause=0.05,
    )


@pytest.fixture
def session_table(gateway: Gateway, table: str, db: Database, clock: FakeClock) -> SessionTable:
    """A fresh session table of the test's own (dropped afterwards), on the test's clock."""
    db.query(ddl.create_table(table))
    return table_on(gateway, table, clock)


@pytest.fixture
def table_statements(session_table: SessionTable) -> StatementCounter:
    """The statements of ``session_table`` (of its gateway)."""
    return StatementCounter(session_table.gateway)


async def save_new(rows: SessionRows, owner: str | None = None, **values: object) -> str:
    """A stored session holding ``values``, written through ``rows``; returns its id."""
    store = SessionStore(rows)
    store.update(values)
    if owner is not None:
        store.owner = owner
    assert await store.release() is SaveResult.CREATED
    return store.session_id


class WatchdogTimers:
    """The deadline timers (``Watchdog``'s) that the running loop schedules, seen through a
    spy on ``loop.call_at``: whether one is still pending, and how many were scheduled."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scheduled = 0
        self._pending: set[asyncio.TimerHandle] = set()
        #: Called after each timer callback ran (a test's hook into "the same loop turn").
        self.after: Callable[[], None] | None = None
        real = loop.call_at

        def call_at(when: float, callback: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
            if not isinstance(getattr(callback, "__self__", None), Watchdog):
                return real(when, callback, *args, **kwargs)
            handle: asyncio.TimerHandle

            def run(*run_args: Any) -> None:
                self._pending.discard(handle)
                callback(*run_args)
                if self.after is not None:
                    self.after()

            handle = real(when, run, *args, **kwargs)
            self._pending.add(handle)
            self.scheduled += 1
            return handle

        monkeypatch.setattr(loop, "call_at", call_at)

    @property
    def running(self) -> bool:
        """A deadline timer is scheduled and has neither run nor been cancelled."""
        return any(not handle.cancelled() for handle in self._pending)


async def make_session(provider: MySQLSessionProvider, owner: str | None = None, **values: object) -> str:
    """A stored session holding ``values``; returns its id."""
    sid = provider.new_session_id()
    store = await provider.read(sid)
    store.update(values)
    if owner is not None:
        store.owner = owner
    assert await store.release() is SaveResult.CREATED
    return sid


def key_of(sid: str) -> str:
    """What the table holds for ``sid``."""
    return hashlib.sha256(sid.encode()).hexdigest()


def row_count(db: Database, table: str) -> int:
    """Session rows, not counting the tombstones that rotations leave under old ids."""
    [(count,)] = db.query(f"SELECT COUNT(*) FROM `{table}` WHERE session_version > 0")
    return int(str(count))


def is_tombstone(db: Database, table: str, sid: str) -> bool:
    """The id was superseded by a rotation: its row is an empty marker that opens nothing."""
    rows = db.query(
        f"SELECT session_data, session_version FROM `{table}` WHERE session_key = %s", (key_of(sid),)
    )
    return rows == [(b"", 0)]


async def eventually(condition: Callable[[], bool], what: str, bound: float = 10.0) -> None:
    """Wait (at most ``bound`` seconds) until ``condition()`` holds, polling every 10 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"still not true after {bound:g}s: {what}")
        await asyncio.sleep(0.01)


#: Every way the app can get hold of the list under "cart" (each must be noticed).
HANDED_OUT: dict[str, Callable[[SessionStore], Any]] = {
    "getitem": lambda s: s["cart"],
    "get": lambda s: s.get("cart"),
    "setdefault": lambda s: s.setdefault("cart", []),
    "values": lambda s: next(v for v in s.values() if isinstance(v, list)),
    "items": lambda s: dict(s.items())["cart"],
    "copy": lambda s: s.copy()["cart"],
    "or": lambda s: (s | {})["cart"],
    "ror": lambda s: ({} | s)["cart"],
    "dict()": lambda s: dict(s)["cart"],
    "unpacking": lambda s: {**s}["cart"],
}
