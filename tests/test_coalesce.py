"""Reads of one event-loop turn share one SELECT and answer exactly what separate reads do."""

from __future__ import annotations

import asyncio

import pytest
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, key_of, make_session

from asgi_mysql_session import MySQLSessionProvider, SessionBackendError, sql
from asgi_mysql_session.coalesce import BATCH


async def mixed_keys(provider: MySQLSessionProvider, db: Database, table: str) -> list[str]:
    """Live (with and without owners), superseded, expired, past the absolute lifetime, unknown."""
    live = [await make_session(provider, n=i) for i in range(40)]
    owned = [await make_session(provider, owner=f"user,{i}\x00", n=i) for i in range(5)]
    rotated = [await make_session(provider, n=i) for i in range(3)]
    for sid in rotated:
        await provider.regenerate(sid, provider.new_session_id())
    expired = [await make_session(provider, n=i) for i in range(3)]
    old = [await make_session(provider, n=i) for i in range(3)]
    now = provider.now()
    for sid in expired:
        db.query(f"UPDATE `{table}` SET session_expiry = %s WHERE session_key = %s", (now, key_of(sid)))
    assert provider.absolute_lifetime is not None
    born = now - provider.absolute_lifetime
    for sid in old:
        db.query(f"UPDATE `{table}` SET session_created = %s WHERE session_key = %s", (born, key_of(sid)))
    unknown = [provider.new_session_id() for _ in range(3)]
    sids = live + owned + rotated + expired + old + unknown
    return [key_of(sid) for sid in sids]


async def test_concurrent_reads_answer_what_separate_reads_answer(
    provider: MySQLSessionProvider, db: Database, table: str, statements: StatementCounter, clock: FakeClock
) -> None:
    keys = await mixed_keys(provider, db, table)
    statements.start()
    alone = [await provider.lookup(key) for key in keys]
    assert statements.delta() == {"select": len(keys)}  # one after the other: one SELECT each
    assert sum(row is None for row in alone) == 9 and sum(bool(row and row.superseded) for row in alone) == 3
    assert {row.owner for row in alone if row} == {None, *(f"user,{i}\x00" for i in range(5))}

    statements.start()
    together = await asyncio.gather(*(provider.lookup(key) for key in keys + keys[::-1]))
    assert list(together) == alone + alone[::-1]
    distinct = len(set(keys))
    # The first read goes at once (nothing was in flight), the rest of the turn is batched.
    assert statements.delta() == {"select": 1 + -(-(distinct - 1) // BATCH)}

    separate = MySQLSessionProvider(
        MYSQL_URL, table=table, clock=clock, gc_interval=None, coalesce_reads=False
    )
    async with separate:
        counter = StatementCounter(separate)
        assert list(await asyncio.gather(*(separate.lookup(key) for key in keys))) == alone
        assert counter.delta() == {"select": len(keys)}


async def test_a_lone_read_is_one_plain_select(
    provider: MySQLSessionProvider, statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await make_session(provider, n=1)
    sent: list[str] = []
    execute = provider._execute

    async def spy(statement: str, args: object = ()) -> object:
        sent.append(statement)
        return await execute(statement, args)  # type: ignore[arg-type]

    monkeypatch.setattr(provider, "_execute", spy)
    statements.start()
    row = await provider.fetch(key_of(sid))
    assert row is not None and row.values == {"n": 1}
    assert sent == [provider.sql.select] and statements.delta() == {"select": 1}


async def test_a_cancelled_reader_leaves_the_others_alone(provider: MySQLSessionProvider) -> None:
    sids = [await make_session(provider, n=i) for i in range(3)]
    tasks = [asyncio.create_task(provider.fetch(key_of(sid))) for sid in sids]
    await asyncio.sleep(0)  # every read is pending
    await asyncio.sleep(0)  # the batch is on its way
    tasks[1].cancel()  # the first read went alone; the second and third share a statement
    rows = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(rows[1], asyncio.CancelledError)
    assert [rows[0].values, rows[2].values] == [{"n": 0}, {"n": 2}]  # type: ignore[union-attr]
    # Cancelled before anything was sent: nothing is sent for it.
    task = asyncio.create_task(provider.fetch(key_of(sids[0])))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await provider.fetch(key_of(sids[0]))) is not None


async def test_a_failure_reaches_every_reader(
    provider: MySQLSessionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = [await make_session(provider, n=i) for i in range(4)]
    broken = {
        name: getattr(provider.sql, name).replace("WHERE session_key", "WHERE no_such_column", 1)
        for name in ("select", "select_many")
    }
    monkeypatch.setattr(provider, "sql", sql.Statements(**{**provider.sql.__dict__, **broken}))
    provider._coalescer._statements.clear()  # type: ignore[union-attr]
    results = await asyncio.gather(*(provider.fetch(key_of(s)) for s in sids), return_exceptions=True)
    assert all(isinstance(r, SessionBackendError) and "statement failed" in str(r) for r in results)
    assert len({id(r) for r in results}) == len(results)  # each reader its own error object


async def test_the_statement_deadline_applies(
    provider: MySQLSessionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = [await make_session(provider, n=i) for i in range(3)]
    slow = {
        name: getattr(provider.sql, name).replace(" WHERE ", " WHERE SLEEP(2) = 0 AND ", 1)
        for name in ("select", "select_many")
    }
    monkeypatch.setattr(provider, "sql", sql.Statements(**{**provider.sql.__dict__, **slow}))
    provider._coalescer._statements.clear()  # type: ignore[union-attr]
    provider.timeout = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(provider.fetch(key_of(s)) for s in sids), return_exceptions=True)
    assert loop.time() - started < 1.5
    assert all(isinstance(r, SessionBackendError) and "did not answer" in str(r) for r in results)
    provider.timeout = 5.0
    monkeypatch.undo()
    assert (await provider.fetch(key_of(sids[0]))) is not None  # the pool is fine afterwards


async def test_more_keys_than_a_batch_and_a_row_too_big_to_pack(
    provider: MySQLSessionProvider, statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = [await make_session(provider, owner="o", n=i) for i in range(BATCH + 6)]
    statements.start()
    rows = await asyncio.gather(*(provider.fetch(key_of(s)) for s in sids))
    assert [row.values["n"] for row in rows if row] == list(range(BATCH + 6))
    assert statements.delta() == {"select": 1 + 2}  # the first alone, then 32 and 5
    # A value the server could not pack (over max_allowed_packet) comes back as "key,".
    too_big = provider.sql.select_many.replace(
        f"IFNULL({sql._PACKED}, '')", "IFNULL(CAST(NULL AS BINARY), '')"
    )
    monkeypatch.setattr(provider, "sql", sql.Statements(**{**provider.sql.__dict__, "select_many": too_big}))
    provider._coalescer._statements.clear()  # type: ignore[union-attr]
    statements.start()
    rows = await asyncio.gather(*(provider.fetch(key_of(s)) for s in sids[:4]))
    assert [(row.values, row.owner) for row in rows if row] == [({"n": i}, "o") for i in range(4)]
    assert statements.delta() == {"select": 1 + 1 + 3}  # the first alone, the batch, 3 too big


def test_a_provider_opened_again_on_another_loop_still_reads(table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, gc_interval=None)
    coalescer = provider._coalescer
    assert coalescer is not None

    async def first() -> str:
        async with provider:
            sid = await make_session(provider, n=1)
            assert await provider.fetch(key_of(sid)) is not None
        # What a loop that stopped before it sent its batch leaves behind.
        coalescer._scheduled = True
        coalescer._pending[(0, 0)] = {key_of(sid): [asyncio.get_running_loop().create_future()]}
        return sid

    async def second(sid: str) -> None:
        async with provider:
            row = await asyncio.wait_for(provider.fetch(key_of(sid)), 5)
            assert row is not None and row.values == {"n": 1}

    sid = asyncio.run(first())
    asyncio.run(second(sid))
