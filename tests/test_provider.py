"""The Go provider's API (read, exist, regenerate, destroy, all, gc) against MariaDB."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, make_session

from asgi_mysql_session import (
    MySQLSessionProvider,
    SessionConfigError,
    SessionError,
    SessionSchemaError,
)


async def test_open_is_idempotent(provider: MySQLSessionProvider) -> None:
    pool = provider._pool
    await provider.open()
    assert provider._pool is pool and provider.is_open


async def test_async_with_opens_and_closes(table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, gc_interval=None)
    async with provider as opened:
        assert opened.is_open
        assert await provider.all() == 0
    assert not provider.is_open
    with pytest.raises(SessionError, match="not open"):
        await provider.all()


async def test_missing_table_is_a_clear_error_naming_it(table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None)
    with pytest.raises(SessionSchemaError, match=rf"`{table}`.*create_table=True.*init --print-sql"):
        await provider.open()
    assert not provider.is_open


async def test_table_with_wrong_columns_is_refused(db: Database, table: str) -> None:
    db.query(
        f"CREATE TABLE `{table}` (session_key CHAR(64) NOT NULL PRIMARY KEY, "
        "session_data BLOB, session_expiry INT UNSIGNED NOT NULL)"
    )
    provider = MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None)
    with pytest.raises(SessionSchemaError, match=r"session_version.*upgrade"):
        await provider.open()


async def test_create_table_makes_the_schema_sql_table(db: Database, table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, gc_interval=None)
    async with provider:
        pass
    indexes = {row[2] for row in db.query(f"SHOW INDEX FROM `{table}`")}
    assert indexes == {"PRIMARY", "session_expiry", "session_owner"}
    engine = db.query("SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_NAME = %s", (table,))
    assert engine == [("InnoDB",)]


async def test_read_of_unknown_id_is_an_empty_new_store_after_one_select(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = provider.new_session_id()
    statements.start()
    store = await provider.read(sid)
    assert statements.delta() == {"select": 1}
    assert store.session_id == sid and store.is_new and dict(store) == {}


async def test_read_returns_what_was_released(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, user="ada", n=1, blob=b"\x00\xff", nested={"a": [1, 2.5, None]})
    store = await provider.read(sid)
    assert not store.is_new
    assert dict(store) == {"user": "ada", "n": 1, "blob": b"\x00\xff", "nested": {"a": [1, 2.5, None]}}


async def test_the_table_holds_the_sha256_of_the_id_never_the_id(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    rows = db.query(f"SELECT * FROM `{table}`")
    assert len(rows) == 1
    assert rows[0][0] == hashlib.sha256(sid.encode()).hexdigest()
    assert not any(sid in repr(column) for column in rows[0])
    # The stored hash presented as an id is just another unknown id.
    assert not await provider.exist(str(rows[0][0]))


async def test_new_session_ids_are_urlsafe_256_bit_and_distinct(provider: MySQLSessionProvider) -> None:
    ids = {provider.new_session_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 43 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


async def test_exist_is_true_only_for_live_sessions(provider: MySQLSessionProvider, clock: FakeClock) -> None:
    sid = await make_session(provider, a=1)
    assert await provider.exist(sid)
    assert not await provider.exist(provider.new_session_id())
    clock.advance(provider.max_lifetime)
    assert not await provider.exist(sid)


async def test_a_row_past_its_deadline_reads_as_absent_before_any_sweep(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    sid = await make_session(provider, a=1)
    clock.advance(provider.max_lifetime - 1)
    assert dict(await provider.read(sid)) == {"a": 1}
    clock.advance(1)
    store = await provider.read(sid)
    assert store.is_new and dict(store) == {}
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(1,)]  # still there, unswept


async def test_expiry_is_the_absolute_deadline_in_unix_seconds(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    await make_session(provider, a=1)
    [(expiry, created)] = db.query(f"SELECT session_expiry, session_created FROM `{table}`")
    assert created == int(clock.now)
    assert expiry == int(clock.now) + provider.max_lifetime


async def test_regenerate_moves_the_data_and_kills_the_old_id(provider: MySQLSessionProvider) -> None:
    old = await make_session(provider, user="ada")
    new = provider.new_session_id()
    store = await provider.regenerate(old, new)
    assert store.session_id == new and dict(store) == {"user": "ada"} and not store.is_new
    assert not await provider.exist(old)
    assert dict(await provider.read(new)) == {"user": "ada"}
    assert await provider.all() == 1


async def test_regenerate_of_a_missing_id_gives_an_empty_store_under_the_new_id(
    provider: MySQLSessionProvider,
) -> None:
    new = provider.new_session_id()
    store = await provider.regenerate(provider.new_session_id(), new)
    assert store.session_id == new and store.is_new and dict(store) == {}
    assert await provider.all() == 0


async def test_destroy_removes_the_row(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    assert await provider.destroy(sid) is True
    assert not await provider.exist(sid)
    assert await provider.destroy(sid) is False


async def test_all_counts_live_sessions_only(provider: MySQLSessionProvider, clock: FakeClock) -> None:
    for _ in range(3):
        await make_session(provider, a=1)
    clock.advance(provider.max_lifetime // 2)
    for _ in range(2):
        await make_session(provider, a=1)
    assert await provider.all() == 5
    clock.advance(provider.max_lifetime // 2)
    assert await provider.all() == 2


async def test_gc_deletes_expired_rows_in_batches_and_spares_live_ones(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str, statements: StatementCounter
) -> None:
    for _ in range(10):
        await make_session(provider, a=1)
    clock.advance(provider.max_lifetime)
    live = await make_session(provider, b=2)
    statements.start()
    assert await provider.gc(batch_size=3) == 10
    assert statements.delta() == {"delete": 4}  # 3 + 3 + 3 + 1
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(1,)]
    assert dict(await provider.read(live)) == {"b": 2}
    assert await provider.gc() == 0


async def test_gc_uses_the_expiry_index(provider: MySQLSessionProvider, db: Database, table: str) -> None:
    plan = db.query(
        f"EXPLAIN DELETE FROM `{table}` WHERE session_expiry <= 5 ORDER BY session_expiry LIMIT 10"
    )
    assert "session_expiry" in repr(plan)


async def test_bytes_values_bind_as_parameters(provider: MySQLSessionProvider) -> None:
    # Through aiomysql's Connection.escape, PyMySQL 1.2 failed here ("'str' object is not callable").
    count, _ = await provider._execute("SELECT %s", (b"\x00\x01binary\xff",))
    assert count == 1
    sid = await make_session(provider, raw=bytes(range(256)))
    assert (await provider.read(sid))["raw"] == bytes(range(256))


async def test_conditional_update_of_identical_bytes_still_counts_the_row(
    provider: MySQLSessionProvider,
) -> None:
    # FOUND_ROWS: a matched row whose bytes did not change is not "gone".
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    assert await provider.touch(store.key_hash, store.expiry)
    assert await provider.update(store.key_hash, b"\x81\xa1a\x01", store.expiry, None, store.version)


def _aiomysql_pool_kwargs() -> dict[str, object]:
    from urllib.parse import urlsplit

    parts = urlsplit(MYSQL_URL)
    return {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
        "db": parts.path.lstrip("/"),
        "minsize": 1,
        "maxsize": 2,
    }


async def test_a_shared_aiomysql_pool_is_used_and_left_open(table: str) -> None:
    import aiomysql

    pool = await aiomysql.create_pool(**_aiomysql_pool_kwargs(), **MySQLSessionProvider.connect_kwargs())
    try:
        async with MySQLSessionProvider(
            pool=pool, table=table, create_table=True, gc_interval=None
        ) as provider:
            sid = await make_session(provider, a=1)
            assert dict(await provider.read(sid)) == {"a": 1}
        assert not pool.closed
    finally:
        pool.close()
        await pool.wait_closed()


async def test_a_shared_pool_without_found_rows_is_refused(table: str) -> None:
    import aiomysql

    pool = await aiomysql.create_pool(**_aiomysql_pool_kwargs(), autocommit=True)
    try:
        provider = MySQLSessionProvider(pool=pool, table=table, create_table=True, gc_interval=None)
        with pytest.raises(SessionConfigError, match="FOUND_ROWS"):
            await provider.open()
    finally:
        pool.close()
        await pool.wait_closed()


def test_a_provider_used_on_another_loop_is_refused_clearly(table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, gc_interval=None)
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first.run_until_complete(provider.open())
        with pytest.raises(SessionError, match="another event loop"):
            second.run_until_complete(provider.all())
        assert first.run_until_complete(provider.all()) == 0  # still fine on its own loop
        first.run_until_complete(provider.close())
    finally:
        first.close()
        second.close()


async def test_a_provider_used_from_another_thread_while_its_loop_runs_is_refused(
    provider: MySQLSessionProvider,
) -> None:
    def elsewhere() -> BaseException | None:
        try:
            asyncio.run(provider.all())
        except BaseException as exc:
            return exc
        return None

    error = await asyncio.to_thread(elsewhere)
    assert isinstance(error, SessionError) and "another event loop" in str(error)


async def test_statements_do_not_ask_asyncio_for_the_running_loop(
    provider: MySQLSessionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 ``asyncio.get_running_loop()`` is a getpid() system call."""
    sid = await make_session(provider, user="ada")
    calls = 0
    real = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    store = await provider.read(sid)
    store["n"] = 1
    await store.release()
    assert provider.statements["update"] == 1
    assert calls == 0
