"""A read returns one packed column (issue 15); what it unpacks is exactly what was stored."""

from __future__ import annotations

import pytest
from conftest import Database, FakeClock, StatementCounter, key_of, make_session

from asgi_mysql_session import MySQLSessionProvider, sql
from asgi_mysql_session.serializer import encode

OWNERS = [None, "", "a,b,,c", "x\x00y,", "-1,", "ünï😀 ,", "z" * 191, "😀" * 191]


@pytest.mark.parametrize("owner", OWNERS)
async def test_every_field_round_trips(provider: MySQLSessionProvider, owner: str | None) -> None:
    key = key_of(provider.new_session_id())
    data = encode({"k": [1, "two", {"3": 2**40}], "big": 2**63 - 1})
    expiry = 2**32 - 1  # INT UNSIGNED's largest value
    await provider.insert(key, data, expiry, 2**32 - 2, owner)
    row = await provider.lookup(key)
    assert row is not None
    assert (row.data, row.expiry, row.version, row.created, row.owner) == (data, expiry, 1, 2**32 - 2, owner)
    assert row.values == {"k": [1, "two", {"3": 2**40}], "big": 2**63 - 1}
    assert type(row.data) is bytes and type(row.expiry) is int


async def test_a_read_is_one_select_of_one_column(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database
) -> None:
    sid = await make_session(provider, owner="ada", n=1)
    statements.start()
    row = await provider.fetch(key_of(sid))
    assert row is not None and row.values == {"n": 1} and row.owner == "ada"
    assert statements.delta() == {"select": 1}
    assert provider.sql.select.startswith("SELECT CONCAT(") and " FROM " in provider.sql.select
    [(value,)] = db.query(provider.sql.select, (key_of(sid), 0, 0))
    assert isinstance(value, bytes) and sql.unpack(value)[4] == "ada"


async def test_tombstones_expired_and_past_absolute_lifetime(
    provider: MySQLSessionProvider, clock: FakeClock
) -> None:
    sid = await make_session(provider, n=1)
    new = provider.new_session_id()
    await provider.regenerate(sid, new)
    tomb = await provider.lookup(key_of(sid))
    assert tomb is not None and tomb.superseded and tomb.values == {} and tomb.data == b""
    assert await provider.fetch(key_of(sid)) is None
    assert (await provider.fetch(key_of(new))) is not None
    clock.advance(provider.absolute_lifetime or 0)
    assert await provider.lookup(key_of(new)) is None


def test_unpack_keyed_matches_unpack() -> None:
    for owner in OWNERS:
        head = b"7,2,5," + (b"-1," if owner is None else str(len(owner.encode())).encode() + b",")
        value = head + (owner or "").encode() + b"\x80,data"
        assert sql.unpack(value) == (b"\x80,data", 7, 2, 5, owner)
        assert sql.unpack_keyed(b"k" * 64 + b"," + value) == ("k" * 64, sql.unpack(value))


async def test_a_row_too_big_to_pack_is_read_column_by_column(
    provider: MySQLSessionProvider, statements: StatementCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await make_session(provider, owner="ada", n=1)
    # What the server answers when the packed value would exceed max_allowed_packet: NULL.
    too_big = provider.sql.select.replace(sql._PACKED, "NULL")
    monkeypatch.setattr(provider, "sql", sql.Statements(**{**provider.sql.__dict__, "select": too_big}))
    statements.start()
    row = await provider.fetch(key_of(sid))
    assert row is not None and row.values == {"n": 1} and row.owner == "ada"
    assert statements.delta() == {"select": 2}
