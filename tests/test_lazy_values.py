"""Big lists and dicts of a row stay packed until the app asks for them (``serializer.Packed``,
README "Nested values cost only when used").

A session of a real shop holds an 8 KB cart beside a few flat keys; most requests read a flat
key. Decoding the cart would cost such a request more than all else it does, so a list or
dict packed into ``LAZY_SIZE`` bytes or more is decoded the first time the app gets it, and
written back byte for byte if it never does. None of this may be visible through the
store's methods: every way of reaching the data gives decoded values. Real MariaDB tables.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import conftest
import msgpack
import pytest
from conftest import Database, FakeClock, StatementCounter, key_of, row_count, save_new, table_on
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_mysql_session import SaveResult, SessionDecodeError, SessionStore, ddl, loading, serializer
from asgi_mysql_session.gateway import Gateway
from asgi_mysql_session.serializer import LAZY_SIZE, Packed, decode
from asgi_mysql_session.table import SessionTable

CART = [{"sku": f"SKU-{n:07d}", "title": f"item {n} " + "x" * 112, "qty": 1 + n % 3} for n in range(50)]


def stored_bytes(db: Database, table: str, sid: str) -> bytes:
    [(data,)] = db.query(f"SELECT session_data FROM `{table}` WHERE session_key = %s", (key_of(sid),))
    assert isinstance(data, bytes)
    return data


def put_row(db: Database, table: str, sid: str, values: dict[str, Any]) -> None:
    """Overwrite the row as another program would (msgpack, no checks)."""
    db.query(
        f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s",
        (msgpack.packb(values, use_bin_type=True), key_of(sid)),
    )


async def opened(rows: SessionTable, sid: str) -> SessionStore:
    store = SessionStore(rows, sid)
    await store.read()
    assert not store.is_new
    return store


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the packed values decoded from now on."""
    sizes: list[int] = []
    real = loading.unpack_value

    def spy(value: Packed) -> Any:
        sizes.append(len(value.raw))
        return real(value)

    monkeypatch.setattr(loading, "unpack_value", spy)
    return sizes


def test_the_cart_of_the_tests_is_big_enough_to_stay_packed() -> None:
    assert len(serializer.packed(CART)) >= LAZY_SIZE


async def test_a_big_nested_value_is_decoded_only_when_the_app_first_asks_for_it(
    session_table: SessionTable, decodes: list[int]
) -> None:
    sid = await save_new(session_table, user_id=7, roles=["reader"], cart=CART)
    store = await opened(session_table, sid)
    assert store["user_id"] == 7 and store["roles"] == ["reader"]
    assert await store.release() is SaveResult.NOTHING
    assert decodes == []
    assert store["cart"] == CART
    assert store["cart"] == CART
    assert decodes == [len(serializer.packed(CART))]  # once


async def test_a_big_nested_value_never_asked_for_is_written_back_byte_for_byte(
    session_table: SessionTable, db: Database, table: str, decodes: list[int]
) -> None:
    sid = await save_new(session_table, user_id=7, cart=CART)
    before = stored_bytes(db, table, sid)
    store = await opened(session_table, sid)
    store["counter"] = 1
    assert await store.release() is SaveResult.UPDATED
    assert decodes == []
    after = stored_bytes(db, table, sid)
    assert serializer.packed(CART) in before and serializer.packed(CART) in after
    assert decode(after) == {"user_id": 7, "cart": CART, "counter": 1}


async def test_a_session_with_nothing_changed_writes_nothing_even_after_the_cart_was_read(
    session_table: SessionTable, table_statements: StatementCounter
) -> None:
    sid = await save_new(session_table, user_id=7, cart=CART)
    store = await opened(session_table, sid)
    assert len(store["cart"]) == 50
    table_statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert table_statements.delta() == {}


HANDED_OUT = {
    **conftest.HANDED_OUT,
    "pop": lambda s: s.pop("cart"),
    "popitem": lambda s: s.popitem()[1],
    "json.dumps": lambda s: json.loads(json.dumps(s))["cart"],
}


@pytest.mark.parametrize("way", HANDED_OUT)
async def test_every_way_of_reaching_a_big_nested_value_gives_it_decoded(
    session_table: SessionTable, way: str
) -> None:
    sid = await save_new(session_table, user_id=7, cart=CART)
    store = await opened(session_table, sid)
    assert HANDED_OUT[way](store) == CART


async def test_a_session_holding_a_packed_value_compares_as_its_data(session_table: SessionTable) -> None:
    sid = await save_new(session_table, user_id=7, cart=CART)
    data = {"user_id": 7, "cart": CART}
    store = await opened(session_table, sid)
    assert store == data and data == store
    assert (store != data) is False and (data != store) is False
    assert store != {"user_id": 7, "cart": []}


async def test_two_sessions_with_packed_values_compare_by_their_data(session_table: SessionTable) -> None:
    first = await opened(session_table, await save_new(session_table, cart=CART))
    second = await opened(session_table, await save_new(session_table, cart=CART))
    assert first == second
    assert (first != second) is False


async def test_a_big_nested_value_changed_in_place_is_saved(
    session_table: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(session_table, user_id=7, cart=CART)
    store = await opened(session_table, sid)
    store["cart"].append({"sku": "new"})
    assert await store.release() is SaveResult.UPDATED
    assert decode(stored_bytes(db, table, sid))["cart"] == [*CART, {"sku": "new"}]


async def test_marking_modified_decodes_what_is_still_packed_and_saves_it(
    session_table: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(session_table, cart=CART)
    store = await opened(session_table, sid)
    store.mark_modified()
    assert type(dict.__getitem__(store, "cart")) is list
    assert await store.release() is SaveResult.NOTHING  # compared: the same bytes
    assert decode(stored_bytes(db, table, sid)) == {"cart": CART}


async def test_a_big_stored_value_that_cannot_be_decoded_is_dropped_when_asked_for(
    session_table: SessionTable, db: Database, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program's row: the rest of the session stays, the bad value goes."""
    sid = await save_new(session_table, user_id=7)
    put_row(db, table, sid, {"user_id": 7, "log": [msgpack.ExtType(5, b"x" * LAZY_SIZE)]})
    store = await opened(session_table, sid)
    assert store["user_id"] == 7
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        assert store.get("log") is None
    assert "ext type 5" in caplog.text and sid not in caplog.text
    assert "log" not in store and list(store) == ["user_id"]
    assert await store.release() is SaveResult.UPDATED  # written again without it
    assert decode(stored_bytes(db, table, sid)) == {"user_id": 7}


async def test_a_big_stored_value_that_cannot_be_decoded_is_written_back_if_never_asked_for(
    session_table: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(session_table, user_id=7)
    foreign = {"user_id": 7, "log": [msgpack.ExtType(5, b"x" * LAZY_SIZE)]}
    put_row(db, table, sid, foreign)
    store = await opened(session_table, sid)
    store["user_id"] = 8
    assert await store.release() is SaveResult.UPDATED
    assert msgpack.unpackb(stored_bytes(db, table, sid)) == {**foreign, "user_id": 8}


async def test_a_truncated_row_is_dropped_whole_as_before(
    session_table: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(session_table, user_id=7, cart=CART)
    db.query(
        f"UPDATE `{table}` SET session_data = LEFT(session_data, LENGTH(session_data) - 1) "
        "WHERE session_key = %s",
        (key_of(sid),),
    )
    assert await session_table.lookup(key_of(sid)) is None
    assert row_count(db, table) == 0


async def test_a_packed_value_survives_a_merge_with_another_writer(
    session_table: SessionTable, db: Database, table: str
) -> None:
    """Both writers' key-level changes persist: one changed the cart, the other a counter."""
    sid = await save_new(session_table, user_id=7, cart=CART)
    first = await opened(session_table, sid)
    second = await opened(session_table, sid)
    first["cart"].append({"sku": "new"})
    assert await first.release() is SaveResult.UPDATED
    second["counter"] = 1  # its cart is still packed, as read before the first wrote
    assert await second.release() is SaveResult.UPDATED
    assert decode(stored_bytes(db, table, sid)) == {
        "user_id": 7,
        "cart": [*CART, {"sku": "new"}],
        "counter": 1,
    }


async def behind_a_counter_write(rows: SessionTable) -> tuple[str, SessionStore]:
    """A session with a cart, read by a request while another request set a counter."""
    sid = await save_new(rows, user_id=7, cart=CART)
    first = await opened(rows, sid)
    second = await opened(rows, sid)
    second["counter"] = 1
    assert await second.release() is SaveResult.UPDATED
    return sid, first


async def test_a_cart_replaced_by_one_writer_is_kept_by_the_other_writers_merge(
    session_table: SessionTable, db: Database, table: str
) -> None:
    sid, first = await behind_a_counter_write(session_table)
    first["cart"] = CART[:1]
    assert await first.release() is SaveResult.UPDATED
    assert decode(stored_bytes(db, table, sid)) == {"user_id": 7, "cart": CART[:1], "counter": 1}


async def test_a_nested_value_deleted_while_another_writer_wrote_stays_deleted_and_unlisted(
    session_table: SessionTable, db: Database, table: str
) -> None:
    sid, first = await behind_a_counter_write(session_table)
    del first["cart"]
    assert await first.release() is SaveResult.UPDATED  # merged onto the second's row
    assert list(first) == ["user_id", "counter"]
    assert decode(stored_bytes(db, table, sid)) == {"user_id": 7, "counter": 1}


async def test_a_nested_value_deleted_before_it_was_looked_at_leaves_the_rest_listable(
    session_table: SessionTable,
) -> None:
    sid = await save_new(session_table, user_id=7, roles=["reader"], cart=CART)
    store = await opened(session_table, sid)
    del store["cart"]
    del store["roles"]
    assert list(store) == ["user_id"] and store == {"user_id": 7}


async def test_with_lazy_values_off_every_row_is_decoded_whole(
    gateway: Gateway, db: Database, table: str, clock: FakeClock
) -> None:
    """For C code that reads the dict's storage without its methods (orjson, msgspec)."""
    db.query(ddl.create_table(table))
    rows = table_on(gateway, table, clock, lazy_values=False)
    sid = await save_new(rows, user_id=7, cart=CART)
    store = await opened(rows, sid)
    assert dict.__getitem__(store, "cart") == CART


# -- the decoding itself, property-based -----------------------------------------------------

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
SESSIONS = st.dictionaries(st.text(max_size=8), VALUES, max_size=5)
PROPERTY = settings(max_examples=150, deadline=None)
#: A list that takes a row past LAZY_SIZE.
PAD = ["x" * 10] * (LAZY_SIZE // 10)


def unpacked(values: dict[str, Any]) -> dict[str, Any]:
    return {k: serializer.unpack_value(v) if type(v) is Packed else v for k, v in values.items()}


@PROPERTY
@given(data=SESSIONS, big=st.booleans())
def test_a_row_decoded_lazily_is_the_row_decoded_whole_and_packs_back_to_its_bytes(
    data: dict[str, Any], big: bool
) -> None:
    data["pad"] = PAD if big else []
    raw = serializer.encode(data)
    lazy = decode(raw, lazy=True)
    assert serializer.packed(unpacked(lazy)) == serializer.packed(decode(raw))  # (types exactly, nan too)
    assert serializer.pack_values(lazy) == raw


@PROPERTY
@given(data=SESSIONS, at=st.integers(0, 2**31), byte=st.integers(0, 255))
def test_a_row_with_any_byte_changed_decodes_lazily_to_the_same_session_or_an_error(
    data: dict[str, Any], at: int, byte: int
) -> None:
    """An error inside a value left packed shows when it is decoded (the store drops it)."""
    data["pad"] = [*PAD, data.pop("", None)]
    raw = bytearray(serializer.encode(data))
    raw[at % len(raw)] = byte
    try:
        whole: dict[str, Any] | None = decode(bytes(raw))
    except SessionDecodeError:
        whole = None
    try:
        lazy = decode(bytes(raw), lazy=True)
    except SessionDecodeError:
        assert whole is None
        return
    try:
        values = unpacked(lazy)
    except SessionDecodeError:
        assert whole is None
        return
    assert whole is not None and serializer.packed(values) == serializer.packed(whole)


@PROPERTY
@given(data=SESSIONS, cut=st.integers(1, 64))
def test_a_cut_row_is_a_decode_error_lazily_too(data: dict[str, Any], cut: int) -> None:
    data["pad"] = PAD
    raw = serializer.encode(data)
    with pytest.raises(SessionDecodeError):
        decode(raw[:-cut], lazy=True)


def test_a_row_that_fails_halfway_leaves_the_next_rows_decode_intact() -> None:
    """The top-level reader is reused from row to row (making one costs more than using it)."""
    good = serializer.encode({"user_id": 7, "pad": PAD})
    bad = serializer.encode({"user_id": 7, "pad": PAD, "z": 1})[:-1]  # cut inside the last value
    for _ in range(3):
        with pytest.raises(SessionDecodeError):
            decode(bad, lazy=True)
        assert serializer.pack_values(decode(good, lazy=True)) == good
