"""The session table on its own: rows by key hash, on a table and a gateway of the test's own
(conftest's ``session_table``). Its reads are also in test_coalesce.py and test_packed_read.py;
what a store makes of its rows is in test_saving_rules.py.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import StatementCounter, key_of, save_new

from asgi_mysql_session import SaveResult, SessionStore
from asgi_mysql_session.table import SessionTable


async def test_conditional_update_of_identical_bytes_still_counts_the_row(
    session_table: SessionTable,
) -> None:
    # FOUND_ROWS: a matched row whose bytes did not change is not "gone".
    key = key_of(await save_new(session_table, a=1))
    row = await session_table.lookup(key)
    assert row is not None and row.data == b"\x81\xa1a\x01"
    assert await session_table.touch(key, row.expiry)
    assert await session_table.update(key, row.data, row.expiry, None, row.version)


async def test_reading_and_saving_a_session_asks_asyncio_nothing(
    session_table: SessionTable, table_statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 ``asyncio.get_running_loop()`` is a getpid() system call: a request's
    read and write of its session (the table's read path, its read batching, its write, the
    gateway) use the loop the gateway was opened on instead."""
    sid = await save_new(session_table, user="ada")
    calls = 0
    real = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    table_statements.start()
    store = SessionStore(session_table, sid)
    await store.read()
    store["n"] = 1
    assert await store.release() is SaveResult.UPDATED
    assert table_statements.delta() == {"select": 1, "update": 1}
    assert calls == 0
