"""SessionSchema, the public API of the table's shape: create, check, verify, upgrade, stats, policy.

Each test makes its own provider on its own table; none opens it unless the test says so (the
schema works before ``open()``, on a missing or old table).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import pytest
from conftest import MYSQL_URL, Database, FakeClock

from asgi_mysql_session import (
    MySQLSessionProvider,
    RowsConverted,
    SessionSchema,
    SessionSchemaError,
    UpgradeStep,
)
from asgi_mysql_session.coordination import Cluster
from asgi_mysql_session.dsn import parse_dsn

#: The database the tests run in (make test-matrix gives each run its own).
DATABASE = parse_dsn(MYSQL_URL).database

GO_SCHEMA = (
    "CREATE TABLE `{table}` (`session_key` char(64) NOT NULL, `session_data` blob, "
    "`session_expiry` int(11) unsigned NOT NULL, PRIMARY KEY (`session_key`)) "
    "ENGINE=MyISAM DEFAULT CHARSET=utf8"
)
GO_IDS = [f"go-session-id-{n:020}" for n in range(5)]


def sha(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@pytest.fixture
async def schema(table: str, clock: FakeClock) -> AsyncIterator[SessionSchema]:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, clock=clock, gc_interval=None)
    yield provider.schema()
    await provider.close()


@pytest.fixture
def go_table(db: Database, table: str, clock: FakeClock) -> None:
    """The Go provider's table: raw ids as keys, the time of the last write as session_expiry."""
    db.query(GO_SCHEMA.format(table=table))
    for n, sid in enumerate(GO_IDS):
        db.query(f"INSERT INTO `{table}` VALUES (%s, %s, %s)", (sid, b"gob", int(clock.now) - n))


def insert(db: Database, table: str, sid: str, expiry: int, created: int, data: bytes = b"\x80") -> None:
    db.query(
        f"INSERT INTO `{table}` (session_key, session_data, session_expiry, session_created) "
        "VALUES (%s, %s, %s, %s)",
        (sha(sid), data, expiry, created),
    )


def deadlines(db: Database, table: str) -> list[int]:
    return sorted(int(str(row[0])) for row in db.query(f"SELECT session_expiry FROM `{table}`"))


# -- create, check, verify -------------------------------------------------------------------------


async def test_create_makes_a_missing_table_and_says_so(db: Database, table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None)
    schema = provider.schema()
    assert await schema.create() is True
    assert {row[2] for row in db.query(f"SHOW INDEX FROM `{table}`")} == {
        "PRIMARY",
        "session_expiry",
        "session_owner",
    }
    assert not provider.is_open and provider.pool_state().size == 0  # it connected for the call alone


async def test_create_leaves_an_existing_table_alone(schema: SessionSchema, db: Database, table: str) -> None:
    db.query(GO_SCHEMA.format(table=table))
    assert await schema.create() is False
    assert [row[0] for row in db.query(f"SHOW COLUMNS FROM `{table}`")] == [
        "session_key",
        "session_data",
        "session_expiry",
    ]


async def test_check_of_a_fresh_table_is_ok(schema: SessionSchema) -> None:
    await schema.create()
    report = await schema.check()
    assert report.ok and report.problems == () and report.warnings == ()
    assert (report.table, report.database, report.engine) == (schema.table, DATABASE, "InnoDB")
    assert report.cluster is Cluster.SINGLE and not report.legacy


@pytest.mark.usefixtures("go_table")
async def test_check_of_a_go_table_names_its_problems_and_calls_it_legacy(schema: SessionSchema) -> None:
    report = await schema.check()
    assert not report.ok and report.legacy
    assert "column session_data is blob, must be mediumblob" in report.problems
    assert {f"column {c} is missing" for c in ("session_version", "session_created", "session_owner")} <= set(
        report.problems
    )
    assert "there is no index on session_expiry (sweeps would scan the whole table)" in report.problems
    assert any("the engine is MyISAM" in warning for warning in report.warnings)


async def test_check_of_a_missing_table_raises_with_the_library_remedy(schema: SessionSchema) -> None:
    with pytest.raises(SessionSchemaError, match="does not exist") as raised:
        await schema.check()
    assert "create_table=True" in str(raised.value) and "init --print-sql" in str(raised.value)


async def test_a_remedy_replaces_the_advice_about_a_missing_table(table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None)
    schema = provider.schema(remedy="run the migrations")
    with pytest.raises(SessionSchemaError) as raised:
        await schema.verify(create=False)
    assert (
        str(raised.value)
        == f"session table `{table}` does not exist in database `{DATABASE}`: run the migrations"
    )


async def test_verify_creates_a_missing_table_when_asked(
    schema: SessionSchema, db: Database, table: str
) -> None:
    await schema.verify(create=True)
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]
    await schema.verify(create=False)  # and then finds it usable


async def test_verify_refuses_a_missing_table_logged_once(
    schema: SessionSchema, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"), pytest.raises(SessionSchemaError):
        await schema.verify(create=False)
    assert [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()] == [
        f"session backend error: session table `{schema.table}` does not exist in database "
        f"`{DATABASE}`: pass create_table=True to MySQLSessionProvider, run "
        f"`asgi-mysql-session init --table {schema.table}`, "
        "or have a DBA apply the DDL that "
        f"`asgi-mysql-session init --print-sql --table {schema.table}` prints"
    ]


@pytest.mark.usefixtures("go_table")
async def test_verify_refuses_a_go_table_naming_check_and_upgrade(schema: SessionSchema) -> None:
    with pytest.raises(SessionSchemaError) as raised:
        await schema.verify(create=True)  # an existing table is never replaced
    message = str(raised.value)
    assert "lacks or mistypes columns: session_data (mediumblob NOT NULL), session_version" in message
    assert f"asgi-mysql-session upgrade --table {schema.table}" in message


async def test_verify_on_galera_requires_the_lease_table(table: str, db: Database) -> None:
    async with MySQLSessionProvider(
        MYSQL_URL, table=table, create_table=True, cluster="galera", gc_interval=None
    ) as provider:
        schema = provider.schema()
        db.query(f"DROP TABLE `{schema.lease_table}`")
        with pytest.raises(SessionSchemaError, match=f"lease table `{schema.lease_table}` does not exist"):
            await schema.verify(create=False)
        await schema.verify(create=True)
        assert db.query(f"SELECT COUNT(*) FROM `{schema.lease_table}`") == [(0,)]
    db.query(f"DROP TABLE IF EXISTS `{schema.lease_table}`")


def test_ddl_is_schema_sql_for_the_table_and_adds_the_lease_table_on_galera(table: str) -> None:
    schema = MySQLSessionProvider(MYSQL_URL, table=table).schema()
    assert f"CREATE TABLE IF NOT EXISTS `{table}` (" in schema.ddl()
    assert f"`{schema.lease_table}`" not in schema.ddl()
    assert schema.ddl(galera=True).startswith(schema.ddl())
    assert f"CREATE TABLE IF NOT EXISTS `{schema.lease_table}` (" in schema.ddl(galera=True)


# -- upgrade -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("go_table")
async def test_upgrade_reports_what_it_found_each_change_and_the_rows_converted(
    schema: SessionSchema,
) -> None:
    events: list[object] = []
    report = await schema.upgrade(batch_size=2, progress=events.append)
    found, added, *batches, converted, applied = events
    assert isinstance(found, str) and "has the Go provider's schema (MyISAM, 5 rows)" in found
    assert added == UpgradeStep("added session_version, session_created, session_owner; engine InnoDB")
    assert batches == [RowsConverted(2, 2, 5), RowsConverted(2, 4, 5), RowsConverted(1, 5, 5)]
    assert isinstance(converted, UpgradeStep) and converted.message.startswith("converted 5 rows")
    assert isinstance(applied, UpgradeStep) and "dropped index session_upgrade_pending" in applied.message
    assert report.changed and report.converted == 5 and report.backup is None
    assert report.check.ok and report.check.engine == "InnoDB"


@pytest.mark.usefixtures("go_table")
async def test_upgrade_hashes_the_keys_and_sets_deadlines(
    schema: SessionSchema, db: Database, table: str, clock: FakeClock
) -> None:
    await schema.upgrade(max_lifetime=600)
    rows = db.query(f"SELECT session_key, session_data, session_expiry, session_created FROM `{table}`")
    now = int(clock.now)
    assert sorted(rows) == sorted((sha(sid), b"", now - n + 600, now - n) for n, sid in enumerate(GO_IDS))


@pytest.mark.usefixtures("go_table")
async def test_an_upgrade_interrupted_mid_conversion_resumes_without_hashing_twice(
    schema: SessionSchema, db: Database, table: str
) -> None:
    class Stopped(Exception):
        pass

    def stop_after_the_first_batch(event: object) -> None:
        if isinstance(event, RowsConverted):
            raise Stopped

    with pytest.raises(Stopped):
        await schema.upgrade(batch_size=2, progress=stop_after_the_first_batch)
    assert not (await schema.check()).ok  # session_version still allows NULL
    report = await schema.upgrade(batch_size=2)
    assert report.changed and report.converted == 3
    assert {row[0] for row in db.query(f"SELECT session_key FROM `{table}`")} == {sha(s) for s in GO_IDS}


async def test_upgrade_of_a_current_table_changes_nothing_and_reports_nothing(schema: SessionSchema) -> None:
    await schema.create()
    events: list[object] = []
    report = await schema.upgrade(progress=events.append)
    assert not report.changed and report.converted == 0 and report.check.ok
    assert events == []


async def test_upgrade_of_a_missing_table_raises(schema: SessionSchema) -> None:
    with pytest.raises(SessionSchemaError, match="does not exist"):
        await schema.upgrade()


# -- maintenance -------------------------------------------------------------------------------


async def test_stats_of_a_known_table(
    schema: SessionSchema, db: Database, table: str, clock: FakeClock
) -> None:
    await schema.create()
    now = int(clock.now)
    for n in range(1, 11):  # live rows of 1..10 bytes, deadlines now+1..now+10
        insert(db, table, f"live-{n}", now + n, now - 5, b"x" * n)
    db.query(
        f"UPDATE `{table}` SET session_owner = 'ada' WHERE session_key IN (%s, %s)",
        (sha("live-1"), sha("live-2")),
    )
    for n in range(3):  # expired, and big: in no size
        insert(db, table, f"dead-{n}", now - 100 + n, now - 200, b"y" * 1000)
    stats = await schema.stats()
    assert (stats.table, stats.database, stats.now) == (table, DATABASE, now)
    assert (stats.live, stats.expired, stats.with_owner, stats.owners) == (10, 3, 2, 1)
    assert (stats.data_p50, stats.data_p90, stats.data_p99, stats.data_max) == (5, 9, 10, 10)
    assert (stats.earliest_deadline, stats.latest_deadline) == (now + 1, now + 10)
    assert stats.oldest_expired_deadline == now - 100


async def test_stats_of_an_empty_table_have_no_sizes_or_deadlines(schema: SessionSchema) -> None:
    await schema.create()
    stats = await schema.stats()
    assert (stats.live, stats.expired) == (0, 0)
    assert (stats.data_p50, stats.data_max, stats.earliest_deadline, stats.oldest_expired_deadline) == (
        None,
        None,
        None,
        None,
    )


async def test_apply_policy_brings_idle_deadlines_down_to_now_plus_max_lifetime(
    schema: SessionSchema, db: Database, table: str, clock: FakeClock
) -> None:
    await schema.create()
    now = int(clock.now)
    for n, expiry in enumerate((now + 30, now + 3000, now + 7000)):
        insert(db, table, f"session-{n}", expiry, now - 10)
    insert(db, table, "expired", now - 1, now - 10)
    assert await schema.apply_policy(max_lifetime=600, absolute_lifetime=None, batch_size=1) == 2
    assert deadlines(db, table) == [now - 1, now + 30, now + 600, now + 600]  # never raised, dead left


async def test_apply_policy_ends_sessions_past_the_absolute_lifetime(
    schema: SessionSchema, db: Database, table: str, clock: FakeClock
) -> None:
    await schema.create()
    now = int(clock.now)
    insert(db, table, "old", now + 3000, now - 7200)
    insert(db, table, "young", now + 3000, now - 60)
    insert(db, table, "unknown-creation", now + 3000, 0)  # bound by its deadline alone
    assert await schema.apply_policy(max_lifetime=None, absolute_lifetime=3600) == 1
    assert deadlines(db, table) == [now - 3600, now + 3000, now + 3000]


async def test_the_schema_of_an_open_provider_uses_its_pool(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    schema = provider.schema()
    sid = provider.new_session_id()
    store = await provider.read(sid)
    store["a"] = 1
    await store.release()
    before = provider.statements["select"]
    assert (await schema.stats()).live == 1
    assert provider.statements["select"] == before + 3  # counted as the provider's own statements
    assert (await schema.check()).ok and provider.is_open
