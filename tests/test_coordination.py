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

import pytest
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, make_session
from sessionapp import client, make_app
from test_reliability import new_session

from asgi_mysql_session import MySQLSessionProvider, sql
from asgi_mysql_session.coordination import Cluster, Leases, cluster_option, new_holder, wsrep_on
from asgi_mysql_session.errors import SessionConfigError, SessionSchemaError


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


def leases_in(db: Database, lease_table: str) -> list[tuple[object, ...]]:
    return db.query(f"SELECT lease_name, lease_holder FROM `{lease_table}`")


# -- a single server: detected, and nothing changes ----------------------------------------


async def test_the_shared_server_is_detected_as_single_and_gets_no_lease_table(
    provider: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    assert provider.cluster is Cluster.SINGLE and str(provider.cluster) == "single"
    assert provider._session_setup is None  # no per-connection statement
    assert db.query("SHOW TABLES LIKE %s", (lease_table,)) == []
    _, rows = await provider._execute("SELECT @@wsrep_sync_wait")
    assert int(rows[0][0]) == 0  # the server default: the provider changed nothing


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
    galera: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    assert galera.cluster is Cluster.GALERA
    assert db.query("SHOW TABLES LIKE %s", (lease_table,)) == [(lease_table,)]
    _, rows = await galera._execute("SELECT @@wsrep_sync_wait")
    assert int(rows[0][0]) == 1
    statements = StatementCounter(galera)
    for _ in range(5):  # once per connection, not once per statement
        await galera._execute("SELECT 1")
    assert statements.delta() == {"select": 5}


async def test_causal_reads_can_be_turned_off(table: str, lease_table: str) -> None:
    async with MySQLSessionProvider(
        MYSQL_URL, table=table, create_table=True, gc_interval=None, cluster="galera", causal_reads=False
    ) as p:
        _, rows = await p._execute("SELECT @@wsrep_sync_wait")
        assert int(rows[0][0]) == 0


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
    galera: MySQLSessionProvider, db: Database, lease_table: str
) -> None:
    leases = Leases(galera.table, ttl=1.0)  # renewed every third of a second
    holder = new_holder()
    assert await leases.claim(galera._execute, "sweep", holder)
    async with leases.kept(galera._execute, "sweep", holder):
        await asyncio.sleep(1.6)  # well past the 1 s lease: still held thanks to renewals
        assert not await leases.claim(galera._execute, "sweep", new_holder())
        assert leases_in(db, lease_table) == [("sweep", holder)]
    assert leases.lost == 0
    assert leases_in(db, lease_table) == []


async def test_one_sweep_at_a_time_with_the_sweep_lease(
    galera: MySQLSessionProvider, db: Database, lease_table: str, clock: FakeClock
) -> None:
    for _ in range(3):
        await make_session(galera, n=1)
    clock.advance(galera.max_lifetime + 1)
    other = new_holder()
    assert await galera.leases.claim(galera._execute, "sweep", other)  # another process sweeps
    assert await galera.sweep(exclusive=True) is None
    await galera.leases.release(galera._execute, "sweep", other)
    statements = StatementCounter(galera)
    assert await galera.sweep(exclusive=True) == 3
    assert statements.delta() == {"insert": 1, "delete": 2}  # lease INSERT, one batch, lease DELETE
    assert leases_in(db, lease_table) == []
