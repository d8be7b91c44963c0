"""A read returns one packed column (issue 15); what it unpacks is exactly what was stored.

The reads are a ``SessionTable``'s (by key hash), on a table and a gateway of the test's own
(conftest's ``session_table``).
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import Database, FakeClock, StatementCounter, key_of, save_new

from asgi_mysql_session import new_session_id, sql
from asgi_mysql_session.serializer import encode
from asgi_mysql_session.table import SessionTable

OWNERS = [None, "", "a,b,,c", "x\x00y,", "-1,", "ünï😀 ,", "z" * 191, "😀" * 191]


@pytest.mark.parametrize("owner", OWNERS)
async def test_every_field_round_trips(session_table: SessionTable, owner: str | None) -> None:
    key = key_of(new_session_id())
    data = encode({"k": [1, "two", {"3": 2**40}], "big": 2**63 - 1})
    expiry = 2**32 - 1  # INT UNSIGNED's largest value
    await session_table.insert(key, data, expiry, 2**32 - 2, owner)
    row = await session_table.lookup(key)
    assert row is not None
    assert (row.data, row.expiry, row.version, row.created, row.owner) == (data, expiry, 1, 2**32 - 2, owner)
    assert row.values == {"k": [1, "two", {"3": 2**40}], "big": 2**63 - 1}
    assert type(row.data) is bytes and type(row.expiry) is int


async def test_a_read_is_one_select_of_one_column(
    session_table: SessionTable, table_statements: StatementCounter, db: Database
) -> None:
    sid = await save_new(session_table, owner="ada", n=1)
    table_statements.start()
    row = await session_table.fetch(key_of(sid))
    assert row is not None and row.values == {"n": 1} and row.owner == "ada"
    assert table_statements.delta() == {"select": 1}
    select = session_table.sql.select
    assert select.startswith("SELECT CONCAT(") and " FROM " in select
    [(value,)] = db.query(select, (key_of(sid), 0, 0))
    assert isinstance(value, bytes) and sql.unpack(value)[4] == "ada"


async def test_tombstones_expired_and_past_absolute_lifetime(
    session_table: SessionTable, clock: FakeClock
) -> None:
    sid = await save_new(session_table, n=1)
    new = new_session_id()
    assert await session_table.rename(key_of(sid), key_of(new))
    tomb = await session_table.lookup(key_of(sid))
    assert tomb is not None and tomb.superseded and tomb.values == {} and tomb.data == b""
    assert await session_table.fetch(key_of(sid)) is None
    assert (await session_table.fetch(key_of(new))) is not None
    clock.advance(session_table.rules.absolute_lifetime or 0)
    assert await session_table.lookup(key_of(new)) is None


def test_unpack_keyed_matches_unpack() -> None:
    for owner in OWNERS:
        head = b"7,2,5," + (b"-1," if owner is None else str(len(owner.encode())).encode() + b",")
        value = head + (owner or "").encode() + b"\x80,data"
        assert sql.unpack(value) == (b"\x80,data", 7, 2, 5, owner)
        assert sql.unpack_keyed(b"k" * 64 + b"," + value) == ("k" * 64, sql.unpack(value))


async def test_a_row_too_big_to_pack_is_read_column_by_column(
    session_table: SessionTable, table_statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await save_new(session_table, owner="ada", n=1)
    # What the server answers when the packed value would exceed max_allowed_packet: NULL.
    _, where, rest = session_table.sql.select.partition(" FROM ")
    too_big = "SELECT NULL" + where + rest
    monkeypatch.setattr(session_table, "sql", dataclasses.replace(session_table.sql, select=too_big))
    table_statements.start()
    row = await session_table.fetch(key_of(sid))
    assert row is not None and row.values == {"n": 1} and row.owner == "ada"
    assert table_statements.delta() == {"select": 2}
