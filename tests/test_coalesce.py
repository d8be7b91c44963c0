"""Reads of one event-loop turn share one SELECT and answer exactly what separate reads answer.

The reads are a ``SessionTable``'s (by key hash), on a table and a gateway of the test's own
(conftest's ``session_table``); the last test drives them through a provider.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from conftest import (
    MYSQL_URL,
    Database,
    FakeClock,
    StatementCounter,
    key_of,
    make_session,
    save_new,
    table_on,
)

from asgi_mysql_session import MySQLSessionProvider, SessionBackendError, new_session_id
from asgi_mysql_session.coalesce import BATCH, ReadCoalescer
from asgi_mysql_session.table import SessionTable


def run_instead(monkeypatch: pytest.MonkeyPatch, rows: SessionTable, **statements: str) -> None:
    """Make ``rows`` send other statements, its batched reads included (undone by monkeypatch)."""
    monkeypatch.setattr(rows, "sql", dataclasses.replace(rows.sql, **statements))
    assert rows.coalescer is not None
    monkeypatch.setattr(rows, "coalescer", ReadCoalescer(rows.gateway, rows.sql, rows.select_one))


async def mixed_keys(rows: SessionTable, db: Database, table: str) -> list[str]:
    """Live (with and without owners), superseded, expired, past the absolute lifetime, unknown."""
    live = [await save_new(rows, n=i) for i in range(40)]
    owned = [await save_new(rows, owner=f"user,{i}\x00", n=i) for i in range(5)]
    rotated = [await save_new(rows, n=i) for i in range(3)]
    for sid in rotated:
        assert await rows.rename(key_of(sid), key_of(new_session_id()))
    expired = [await save_new(rows, n=i) for i in range(3)]
    old = [await save_new(rows, n=i) for i in range(3)]
    now = rows.rules.now()
    for sid in expired:
        db.query(f"UPDATE `{table}` SET session_expiry = %s WHERE session_key = %s", (now, key_of(sid)))
    assert rows.rules.absolute_lifetime is not None
    born = now - rows.rules.absolute_lifetime
    for sid in old:
        db.query(f"UPDATE `{table}` SET session_created = %s WHERE session_key = %s", (born, key_of(sid)))
    unknown = [new_session_id() for _ in range(3)]
    sids = live + owned + rotated + expired + old + unknown
    return [key_of(sid) for sid in sids]


async def test_concurrent_reads_answer_what_separate_reads_answer(
    session_table: SessionTable,
    db: Database,
    table: str,
    table_statements: StatementCounter,
    clock: FakeClock,
) -> None:
    statements = table_statements
    keys = await mixed_keys(session_table, db, table)
    statements.start()
    alone = [await session_table.lookup(key) for key in keys]
    assert statements.delta() == {"select": len(keys)}  # one after the other: one SELECT each
    assert sum(row is None for row in alone) == 9 and sum(bool(row and row.superseded) for row in alone) == 3
    assert {row.owner for row in alone if row} == {None, *(f"user,{i}\x00" for i in range(5))}

    statements.start()
    together = await asyncio.gather(*(session_table.lookup(key) for key in keys + keys[::-1]))
    assert list(together) == alone + alone[::-1]
    distinct = len(set(keys))
    # The first read goes at once (nothing was in flight), the rest of the turn is batched:
    # every key, the first one's too (its second read comes later in the turn).
    assert statements.delta() == {"select": 1 + -(-distinct // BATCH)}

    separate = table_on(session_table.gateway, table, clock, coalesce_reads=False)
    statements.start()
    assert list(await asyncio.gather(*(separate.lookup(key) for key in keys))) == alone
    assert statements.delta() == {"select": len(keys)}


async def test_a_lone_read_is_one_plain_select(
    session_table: SessionTable, table_statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await save_new(session_table, n=1)
    sent: list[str] = []
    gateway = session_table.gateway
    execute = gateway.execute

    async def spy(statement: str, args: object = ()) -> object:
        sent.append(statement)
        return await execute(statement, args)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway, "execute", spy)
    table_statements.start()
    row = await session_table.fetch(key_of(sid))
    assert row is not None and row.values == {"n": 1}
    assert sent == [session_table.sql.select] and table_statements.delta() == {"select": 1}


async def test_a_cancelled_reader_leaves_the_others_alone(session_table: SessionTable) -> None:
    sids = [await save_new(session_table, n=i) for i in range(3)]
    tasks = [asyncio.create_task(session_table.fetch(key_of(sid))) for sid in sids]
    await asyncio.sleep(0)  # every read is pending
    await asyncio.sleep(0)  # the batch is on its way
    tasks[1].cancel()  # the first read went alone; the second and third share a statement
    rows = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(rows[1], asyncio.CancelledError)
    assert [rows[0].values, rows[2].values] == [{"n": 0}, {"n": 2}]  # type: ignore[union-attr]
    # Cancelled before anything was sent: nothing is sent for it.
    task = asyncio.create_task(session_table.fetch(key_of(sids[0])))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await session_table.fetch(key_of(sids[0]))) is not None


async def test_a_failure_reaches_every_reader(
    session_table: SessionTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = [await save_new(session_table, n=i) for i in range(4)]
    broken = {
        name: getattr(session_table.sql, name).replace("WHERE session_key", "WHERE no_such_column", 1)
        for name in ("select", "select_many")
    }
    run_instead(monkeypatch, session_table, **broken)
    results = await asyncio.gather(*(session_table.fetch(key_of(s)) for s in sids), return_exceptions=True)
    assert all(isinstance(r, SessionBackendError) and "statement failed" in str(r) for r in results)
    assert len({id(r) for r in results}) == len(results)  # each reader its own error object


async def test_the_statement_deadline_applies(
    session_table: SessionTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = [await save_new(session_table, n=i) for i in range(3)]
    slow = {
        name: getattr(session_table.sql, name).replace(" WHERE ", " WHERE SLEEP(2) = 0 AND ", 1)
        for name in ("select", "select_many")
    }
    run_instead(monkeypatch, session_table, **slow)
    session_table.gateway.timeout = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(session_table.fetch(key_of(s)) for s in sids), return_exceptions=True)
    assert loop.time() - started < 1.5
    assert all(isinstance(r, SessionBackendError) and "did not answer" in str(r) for r in results)
    session_table.gateway.timeout = 5.0
    monkeypatch.undo()
    assert (await session_table.fetch(key_of(sids[0]))) is not None  # the pool is fine afterwards


async def test_more_keys_than_a_batch_and_a_row_too_big_to_pack(
    session_table: SessionTable, table_statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = table_statements
    sids = [await save_new(session_table, owner="o", n=i) for i in range(BATCH + 6)]
    statements.start()
    rows = await asyncio.gather(*(session_table.fetch(key_of(s)) for s in sids))
    assert [row.values["n"] for row in rows if row] == list(range(BATCH + 6))
    assert statements.delta() == {"select": 1 + 2}  # the first alone, then a full batch and 5
    # A value the server could not pack (over max_allowed_packet) comes back as "key,".
    _, where, rest = session_table.sql.select_many.partition(" FROM ")
    too_big = "SELECT CONCAT(session_key, ',', IFNULL(CAST(NULL AS BINARY), ''))" + where + rest
    run_instead(monkeypatch, session_table, select_many=too_big)
    statements.start()
    rows = await asyncio.gather(*(session_table.fetch(key_of(s)) for s in sids[:4]))
    assert [(row.values, row.owner) for row in rows if row] == [({"n": i}, "o") for i in range(4)]
    assert statements.delta() == {"select": 1 + 1 + 3}  # the first alone, the batch, 3 too big


async def test_a_busy_turn_goes_out_as_several_statements_side_by_side(
    session_table: SessionTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 reads of one turn are not one 30-key statement that they all wait on (and then
    answer together, their clients coming back together: a convoy): the first goes alone,
    the other 29 as statements of at most 8 keys, all sent before any answers."""
    sids = [await save_new(session_table, n=i) for i in range(30)]
    gateway = session_table.gateway
    execute = gateway.execute
    batches: list[int] = []
    everything_sent = asyncio.Event()

    async def held_until_everything_is_sent(statement: str, args: tuple[object, ...] = ()) -> object:
        if statement != session_table.sql.select:
            batches.append(len(args) - 2)  # the keys, then (now, born_after)
        if sum(batches) == len(sids) - 1:
            everything_sent.set()
        # Statements sent one after another would wait here forever: the timeout says so.
        await asyncio.wait_for(everything_sent.wait(), 5)
        return await execute(statement, args)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway, "execute", held_until_everything_is_sent)
    rows = await asyncio.gather(*(session_table.fetch(key_of(s)) for s in sids))
    assert [row.values["n"] for row in rows if row] == list(range(30))
    assert BATCH == 8 and batches == [8, 8, 8, 5]


def test_a_provider_opened_again_on_another_loop_still_reads(table: str) -> None:
    """Reads left waiting for a batch when their loop stopped do not hold up the next loop's."""
    provider = MySQLSessionProvider(MYSQL_URL, table=table, create_table=True, gc_interval=None)

    async def first() -> str:
        await provider.open()
        sid = await make_session(provider, n=1)
        assert dict(await provider.read(sid)) == {"n": 1}
        return sid

    loop = asyncio.new_event_loop()
    try:
        sid = loop.run_until_complete(first())
        # Two reads in one turn: the first goes out alone, the second waits for the batch
        # that the first one's turn schedules. The loop stops before that batch is sent.
        reads = [loop.create_task(provider.read(sid)) for _ in range(2)]
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert not any(read.done() for read in reads)
    finally:  # what asyncio.run does at the end: cancel every task (the batch's before it
        # ever ran; the provider's guard closes it), then close the loop
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert not provider.is_open

    async def second() -> None:
        async with provider:
            store = await asyncio.wait_for(provider.read(sid), 5)
            assert dict(store) == {"n": 1}

    asyncio.run(second())
