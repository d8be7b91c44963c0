"""Shared fixtures: a real MariaDB, one fresh table per test, and a clock the tests move."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pymysql
import pytest

from asgi_mysql_session import MySQLSessionProvider, SaveResult
from asgi_mysql_session.dsn import parse_dsn

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


class StatementCounter:
    """Counts the statements a provider ran between ``start()`` and ``delta()``.

    The provider counts every statement it sends (tests/test_statement_counts.py checks that
    the count agrees with the server's own Com_* counters).
    """

    def __init__(self, provider: MySQLSessionProvider) -> None:
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


def assert_no_connection_checked_out(provider: MySQLSessionProvider) -> None:
    in_use = provider.pool_state().in_use
    assert not in_use, f"{in_use} connection(s) still checked out of the pool"


@pytest.fixture
async def provider(table: str, clock: FakeClock) -> AsyncIterator[MySQLSessionProvider]:
    p = MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, clock=clock, gc_interval=None)
    await p.open()
    yield p
    assert_no_connection_checked_out(p)
    await p.close()


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
