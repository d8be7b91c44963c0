"""Cluster detection, and the lease-based coordination used on Galera.

On the shared (single) server the provider detects "single" and coordinates exactly as
before (GET_LOCK; statement counts unchanged). The lease code is exercised here too, by
forcing ``cluster="galera"`` on the same server: leases are plain InnoDB rows, so they
behave the same on one server as on a cluster (tests/cluster runs them on three nodes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, make_session, new_gateway
from sessionapp import client, make_app
from test_reliability import new_session

from asgi_mysql_session import MySQLSessionProvider, sql
from asgi_mysql_session.coordination import Cluster, Leases, cluster_option, new_holder, wsrep_on
from asgi_mysql_session.dsn import parse_dsn
from asgi_mysql_session.errors import SessionConfigError, SessionSchemaError
from asgi_mysql_session.gateway import Gateway
from asgi_mysql_session.pool import ConnectionPool


@pytest.fixture
def lease_table(table: str, db: Database) -> Iterator[str]:
    name = sql.lease_table_name(table)
    yield name
    db.query(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
async def galera(table: str, lease_table: str, clock: FakeClock) -> AsyncIterator[MySQLSessionProvider]:
    """A provider that takes the shared server for a Galera node: leases, causal reads."""
    p = MySQLSessionProvider(
        MYSQL_URL, table=table, create_table=True, clock=clock, gc_interval=None, cluster="galera"
    )
    await p.open()
    yield p
    await p.close()


@pytest.fixture
async def other_process() -> AsyncIterator[Gateway]:
    """The statements of another process on the same server (its own pool)."""
    gateway = new_gateway()
    await gateway.open()
    yield gateway
    await gateway.close()


def leases_in(db: Database, lease_table: str) -> list[tuple[object, ...]]:
    return db.query(f"SELECT lease_name, lease_holder FROM `{lease_table}`")


@asynccontextmanager
async def lent(table: str, **options: Any) -> AsyncIterator[tuple[MySQLSessionProvider, ConnectionPool]]:
    """An open provider on a pool of one connection that the test lends it, so the test can
    look at that connection's session variables afterwards (``variable``)."""
    dsn = parse_dsn(MYSQL_URL)
    pool = ConnectionPool(
        1,
        1,
        3600,
        host=dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        db=dsn.database,
        **MySQLSessionProvider.connect_kwargs(),
    )
    try:
        options.setdefault("gc_interval", None)
        async with MySQLSessionProvider(pool=pool, table=table, create_table=True, **options) as provider:
            yield provider, pool
    finally:
        pool.close()
        await asyncio.wait_for(pool.wait_closed(), 10)


async def variable(pool: ConnectionPool, name: str) -> int:
    """A session variable of the pool's (one) connection, the one the provider used."""
    conn = await pool.acquire()
    try:
        cursor = await conn.cursor()
        await cursor.execute(f"SELECT @@{name}")
        [(value,)] = await cursor.fetchall()
    finally:
        pool.release(conn)
    return int(value)


# -- a single server: detected, and nothing changes ----------------------------------------


async def test_the_shared_server_is_detected_as_single_and_gets_no_lease_table(
    provider: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    assert provider.cluster is Cluster.SINGLE and str(provider.cluster) == "single"
    assert db.query("SHOW TABLES LIKE %s", (lease_table,)) == []
    # No per-connection statement: reads on fresh connections are their SELECTs alone.
    statements = StatementCounter(provider)
    sid = provider.new_session_id()
    assert await asyncio.gather(*(provider.exist(sid) for _ in range(4))) == [False] * 4
    assert provider.pool_state().size == 4  # three of them opened a connection of their own
    assert statements.delta() == {"select": 4}
    assert not [kind for kind in provider.statements if kind.startswith("set")]


async def test_on_a_single_server_the_provider_changes_no_session_variable(
    table: str, lease_table: str
) -> None:
    async with lent(table) as (provider, pool):
        assert provider.cluster is Cluster.SINGLE
        assert not await provider.exist(provider.new_session_id())
        assert await variable(pool, "wsrep_sync_wait") == 0  # the server default


async def test_single_server_statement_counts_are_unchanged(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, lease_table: str
) -> None:
    async with client(make_app(provider, serialize=True)) as http:
        cookie = await new_session(http, user="ada")
        statements.start()
        await http.get("/incr", headers=cookie)
        assert statements.delta() == {"select": 3, "update": 1}  # GET_LOCK, read, RELEASE_LOCK
        statements.start()
        await http.get("/read", headers=cookie)
        assert statements.delta() == {"select": 3}  # serialized read: GET_LOCK, read, RELEASE_LOCK
    statements.start()
    assert await provider.sweep(exclusive=True) == 0
    assert statements.delta() == {"select": 2, "delete": 1}  # GET_LOCK, one batch, RELEASE_LOCK
    assert db.query("SHOW TABLES LIKE %s", (lease_table,)) == []


def test_the_cluster_option_and_wsrep_values() -> None:
    assert cluster_option("auto") is None
    assert cluster_option("galera") is Cluster.GALERA and cluster_option(Cluster.SINGLE) is Cluster.SINGLE
    with pytest.raises(SessionConfigError, match="cluster must be"):
        cluster_option("percona")
    assert wsrep_on(1) and wsrep_on("ON") and wsrep_on(b"1")
    assert not wsrep_on(0) and not wsrep_on("OFF") and not wsrep_on(None)
    with pytest.raises(SessionConfigError, match="lease_ttl"):
        MySQLSessionProvider(MYSQL_URL, lease_ttl=0.5)


# -- leases (cluster="galera" forced on the shared server) --------------------------------


async def test_galera_mode_creates_the_lease_table_and_reads_causally(
    table: str, db: Database, lease_table: str
) -> None:
    async with lent(table, cluster="galera") as (galera, pool):
        assert galera.cluster is Cluster.GALERA
        assert db.query("SHOW TABLES LIKE %s", (lease_table,)) == [(lease_table,)]
        statements = StatementCounter(galera)
        sid = galera.new_session_id()
        for _ in range(5):  # set up once per connection, not once per statement
            assert not await galera.exist(sid)
        assert statements.delta() == {"select": 5}
        assert await variable(pool, "wsrep_sync_wait") == 1


async def test_causal_reads_can_be_turned_off(table: str, lease_table: str) -> None:
    async with lent(table, cluster="galera", causal_reads=False) as (galera, pool):
        assert not await galera.exist(galera.new_session_id())
        assert await variable(pool, "wsrep_sync_wait") == 0


async def test_galera_mode_without_a_lease_table_fails_at_open_and_says_what_to_do(
    table: str, lease_table: str, db: Database
) -> None:
    async with MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, gc_interval=None):
        pass  # the session table only
    p = MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None, cluster="galera")
    with pytest.raises(SessionSchemaError, match=r"lease table .* `asgi-mysql-session init --table"):
        await p.open()
    assert not p.is_open


async def test_serialized_mode_with_leases_counts_50_concurrent_increments_exactly(
    galera: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    async with client(make_app(galera, serialize=["/incr"])) as http:
        cookie = await new_session(http, user="ada")
        responses = await asyncio.gather(*(http.get("/incr", headers=cookie) for _ in range(50)))
        assert all(r.status_code == 200 for r in responses)
        assert sorted(r.json()["n"] for r in responses) == list(range(1, 51))
        statements = StatementCounter(galera)
        assert (await http.get("/incr", headers=cookie)).json() == {"n": 51}
        # live check, lease INSERT, read, write, lease DELETE
        assert statements.delta() == {"select": 2, "insert": 1, "update": 1, "delete": 1}
    assert leases_in(db, lease_table) == []  # every lease given back


async def test_a_made_up_id_claims_no_lease(
    galera: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    async with client(make_app(galera, serialize=True)) as http:
        statements = StatementCounter(galera)
        response = await http.get("/read", headers={"cookie": f"session={galera.new_session_id()}"})
        assert response.status_code == 200 and response.json() == {}
        assert statements.delta() == {"select": 2}  # the live check, then the middleware's read
    assert leases_in(db, lease_table) == []


async def test_a_held_lease_answers_409_and_a_lapsed_one_is_taken_over(
    galera: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    async with client(make_app(galera, serialize=True, lock_timeout=0.3)) as http:
        cookie = await new_session(http, user="ada")
        key = (await galera.load(cookie["cookie"].split("=", 1)[1])).key_hash
        in_a_minute = int(time.time() * 1000) + 60_000
        lease = (f"session:{key}", "x" * 32, in_a_minute)
        db.query(f"INSERT INTO `{lease_table}` VALUES (%s, %s, %s)", lease)
        began = time.monotonic()
        busy = await http.get("/incr", headers=cookie)
        assert busy.status_code == 409 and 0.3 <= time.monotonic() - began < 2
        # The holder died: its lease lapses and the next request takes it over.
        db.query(f"UPDATE `{lease_table}` SET lease_expires = 1")
        assert (await http.get("/incr", headers=cookie)).json() == {"n": 1}
    assert leases_in(db, lease_table) == []


async def test_a_lease_is_renewed_while_its_request_runs(
    galera: MySQLSessionProvider, db: Database, lease_table: str, other_process: Gateway
) -> None:
    leases = Leases(galera.table, ttl=1.0)  # renewed every third of a second
    holder = new_holder()
    execute = other_process.execute
    assert await leases.claim(execute, "sweep", holder)
    async with leases.kept(execute, "sweep", holder):
        await asyncio.sleep(1.6)  # well past the 1 s lease: still held thanks to renewals
        assert not await leases.claim(execute, "sweep", new_holder())
        assert leases_in(db, lease_table) == [("sweep", holder)]
    assert leases.lost == 0
    assert leases_in(db, lease_table) == []


async def test_one_sweep_at_a_time_with_the_sweep_lease(
    galera: MySQLSessionProvider, db: Database, lease_table: str, clock: FakeClock, other_process: Gateway
) -> None:
    for _ in range(3):
        await make_session(galera, n=1)
    clock.advance(galera.max_lifetime + 1)
    other, leases, execute = new_holder(), Leases(galera.table, ttl=15.0), other_process.execute
    assert await leases.claim(execute, "sweep", other)  # another process sweeps
    assert await galera.sweep(exclusive=True) is None
    await leases.release(execute, "sweep", other)
    statements = StatementCounter(galera)
    assert await galera.sweep(exclusive=True) == 3
    assert statements.delta() == {"insert": 1, "delete": 2}  # lease INSERT, one batch, lease DELETE
    assert leases_in(db, lease_table) == []
