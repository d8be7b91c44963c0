"""What a session may hold: refused at set time, exact round trips, size cap, corrupted rows."""

from __future__ import annotations

import contextlib
import datetime
import enum
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, key_of, make_session

from asgi_mysql_session import (
    MySQLSessionProvider,
    SaveResult,
    SessionInterrupted,
    SessionTooLargeError,
)
from asgi_mysql_session.serializer import encode

SMALL = 64


@pytest.fixture
async def small(table: str, clock: FakeClock) -> AsyncIterator[MySQLSessionProvider]:
    """A provider whose sessions may not exceed 64 encoded bytes."""
    provider = MySQLSessionProvider(
        MYSQL_URL, table=table, create_table=True, clock=clock, gc_interval=None, max_size=SMALL
    )
    await provider.open()
    yield provider
    await provider.close()


def stored(db: Database, table: str, sid: str) -> list[tuple[object, ...]]:
    return db.query(
        "SELECT session_data, session_expiry, session_version, session_created, session_owner "
        f"FROM `{table}` WHERE session_key = %s",
        (key_of(sid),),
    )


def same(a: Any, b: Any) -> bool:
    """Equal with the exact same types all the way down (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- refused when set ----------------------------------------------------------------------


class Custom:
    pass


class Color(str, enum.Enum):
    RED = "red"


class Text(str):
    pass


class Number(enum.IntEnum):
    ONE = 1


REFUSED: dict[str, object] = {
    "tuple": (1, 2),
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "datetime": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    "date": datetime.date(2024, 1, 1),
    "custom_object": Custom(),
    "int_keys_nested_deep": {"a": [{"b": {"c": [{1: "x"}]}}]},
    "int_above_uint64": 2**64,
    "int_below_int64": -(2**63) - 1,
    "lone_surrogate": "\udc80",
    "lone_surrogate_nested": {"a": ["ok", "bad\udc80"]},
    "lone_surrogate_in_nested_key": {"k\udc80": 1},
    "str_subclass_value": Text("x"),
    "int_enum_value": Number.ONE,
    "bytearray": bytearray(b"x"),
    "tuple_inside_list": [1, (2, 3)],
}


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
async def test_an_unstorable_value_is_refused_when_set_naming_the_key(
    provider: MySQLSessionProvider, value: object
) -> None:
    store = await provider.read(provider.new_session_id())
    with pytest.raises(TypeError, match="'the_key'"):
        store["the_key"] = value
    assert "the_key" not in store and not store.modified


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
async def test_an_unstorable_value_is_refused_by_the_go_set(
    provider: MySQLSessionProvider, value: object
) -> None:
    store = await provider.read(provider.new_session_id())
    with pytest.raises(TypeError, match="'the_key'"):
        store.set("the_key", value)


async def test_a_refused_value_leaves_the_previous_value_in_place(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, when="2024-01-01")
    store = await provider.read(sid)
    with pytest.raises(TypeError, match="'when'"):
        store["when"] = datetime.date(2024, 1, 1)
    assert store["when"] == "2024-01-01" and not store.modified


async def test_the_message_names_the_path_inside_the_value(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    with pytest.raises(TypeError, match=r"'deep'\['a'\]\[0\]\['b'\].*dict keys must be str, not int"):
        store["deep"] = {"a": [{"b": {1: "x"}}]}


@pytest.mark.parametrize(
    "key",
    [Color.RED, Text("plain"), 1, b"bytes", None, "\udc80"],
    ids=["str_enum", "str_subclass", "int", "bytes", "none", "lone_surrogate"],
)
async def test_a_key_that_is_not_a_plain_str_is_refused_naming_it(
    provider: MySQLSessionProvider, key: object
) -> None:
    store = await provider.read(provider.new_session_id())
    with pytest.raises(TypeError, match="key") as info:
        store[key] = 1  # type: ignore[index]
    assert repr(key) in str(info.value)
    assert len(store) == 0


async def test_ints_at_the_64_bit_limits_are_accepted_and_just_past_them_refused(
    provider: MySQLSessionProvider,
) -> None:
    store = await provider.read(provider.new_session_id())
    store["max"] = 2**64 - 1
    store["min"] = -(2**63)
    with pytest.raises(TypeError, match="'over'"):
        store["over"] = 2**64
    with pytest.raises(TypeError, match="'under'"):
        store["under"] = -(2**63) - 1


IN_PLACE: dict[str, Any] = {
    "tuple": lambda v: v["list"].append((2, 3)),
    "set": lambda v: v["list"].append({2}),
    "datetime": lambda v: v["dict"].update(when=datetime.datetime(2024, 1, 1)),
    "custom_object": lambda v: v["list"].append(Custom()),
    "int_above_uint64": lambda v: v["list"].append(2**64),
    "lone_surrogate": lambda v: v["list"].append("\udc80"),
    "str_subclass": lambda v: v["list"].append(Text("x")),
    "int_dict_key": lambda v: v["dict"].update({1: "x"}),
    "none_dict_key": lambda v: v["dict"].update({None: "x"}),
    "float_dict_key": lambda v: v["dict"].update({1.5: "x"}),
    "bytes_dict_key": lambda v: v["dict"].update({b"k": "x"}),
    "int_key_nested_deep": lambda v: v["dict"]["inner"].append({7: "x"}),
}


@pytest.mark.parametrize("mutate", IN_PLACE.values(), ids=IN_PLACE.keys())
async def test_a_value_mutated_in_place_into_an_unstorable_one_is_refused_at_release_naming_the_key(
    provider: MySQLSessionProvider,
    db: Database,
    table: str,
    statements: StatementCounter,
    caplog: pytest.LogCaptureFixture,
    mutate: Any,
) -> None:
    # Set-time checks cannot see in-place mutation; release must refuse what the set would
    # have refused rather than store a row that reads back differently (or not at all).
    original = {"list": [1], "dict": {"inner": []}}
    sid = await make_session(provider, **original)
    before = stored(db, table, sid)
    store = await provider.read(sid)
    mutate({"list": store["list"], "dict": store["dict"]})
    statements.start()
    with pytest.raises(TypeError, match=r"'(list|dict)'"):
        await store.release()
    assert statements.delta() == {}
    assert stored(db, table, sid) == before
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        assert dict(await provider.read(sid)) == original
    assert "undecodable" not in caplog.text


async def test_an_int_key_added_in_place_never_makes_the_whole_session_unreadable(
    provider: MySQLSessionProvider, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await make_session(provider, user="ada", prefs={"theme": "dark"})
    store = await provider.read(sid)
    store["prefs"][42] = "answer"
    with contextlib.suppress(TypeError):
        await store.release()
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        again = await provider.read(sid)
    assert not again.is_new, f"the session was lost on the next read: {caplog.text.strip()}"
    assert again["user"] == "ada"


# -- exact round trips -----------------------------------------------------------------------

ROUND_TRIPS: dict[str, object] = {
    "bytes": bytes(range(256)),
    "empty_bytes": b"",
    "nul_bytes": b"\x00" * 10,
    "ascii": "hello",
    "unicode": "héllo wörld ✓ 日本語 𝄞 🎉 \u200d\u0301",
    "nul_in_str": "a\x00b",
    "empty_str": "",
    "zero": 0,
    "uint64_max": 2**64 - 1,
    "int64_max": 2**63 - 1,
    "just_above_int64": 2**63,
    "int64_min": -(2**63),
    "minus_one": -1,
    "negative": -123456789,
    "float": 0.1,
    "negative_zero": -0.0,
    "tiny_float": 5e-324,
    "huge_float": 1.7976931348623157e308,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "nan": math.nan,
    "whole_float": 1.0,
    "true": True,
    "false": False,
    "none": None,
    "empty_list": [],
    "empty_dict": {},
    "nested": {"a": [1, [2, [3, {"b": {"c": [b"x", None, 1.5, {"": []}]}}]]], "z": {}},
    "list_of_mixed": [1, "1", 1.0, True, None, b"1", [], {}],
}


@pytest.mark.parametrize("value", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
async def test_an_accepted_value_round_trips_exactly_through_the_database(
    provider: MySQLSessionProvider, value: object
) -> None:
    sid = await make_session(provider, v=value)
    got = (await provider.read(sid))["v"]
    assert same(got, value), f"{got!r} != {value!r}"


async def test_all_accepted_values_together_round_trip_exactly(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, **ROUND_TRIPS)
    got = dict(await provider.read(sid))
    assert list(got) == list(ROUND_TRIPS)
    for key, value in ROUND_TRIPS.items():
        assert same(got[key], value), key


async def test_nan_round_trips_as_nan(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, nan=math.nan, inside=[math.nan])
    store = await provider.read(sid)
    assert math.isnan(store["nan"]) and math.isnan(store["inside"][0])


async def test_unusual_keys_round_trip(provider: MySQLSessionProvider) -> None:
    values = {"": 1, "日本": 2, "🎉": 3, "a.b/c d": 4, "k" * 1000: 5}
    sid = await make_session(provider, **values)
    assert dict(await provider.read(sid)) == values


async def test_a_session_holding_nan_rewrites_nothing_when_unchanged(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    # nan != nan, yet the encoded bytes are equal: nothing changed, nothing is written.
    sid = await make_session(provider, nan=math.nan)
    store = await provider.read(sid)
    assert math.isnan(store["nan"])
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}


async def test_replacing_an_int_by_the_equal_float_is_a_change(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, n=1)
    store = await provider.read(sid)
    store["n"] = 1.0
    assert await store.release() is SaveResult.UPDATED
    assert same((await provider.read(sid))["n"], 1.0)


async def test_a_merged_write_keeps_types_exact(provider: MySQLSessionProvider) -> None:
    # Two writers of one session: the key-level merge must not confuse 1, 1.0 and True.
    sid = await make_session(provider, a=1, b=0)
    first, second = await provider.read(sid), await provider.read(sid)
    first["b"] = 5
    second["a"] = True
    assert await first.release() is SaveResult.UPDATED
    assert await second.release() is SaveResult.UPDATED
    got = dict(await provider.read(sid))
    assert same(got, {"a": True, "b": 5})


# -- max_size ------------------------------------------------------------------------------


def value_of_size(size: int) -> str:
    """A str that makes {"k": value} encode to exactly ``size`` bytes."""
    value = "x" * (size - 5)  # fixmap(1) + "k"(2) + str8 header(2)
    assert len(encode({"k": value})) == size
    return value


async def test_a_session_of_exactly_max_size_is_stored(small: MySQLSessionProvider) -> None:
    sid = small.new_session_id()
    store = await small.read(sid)
    store["k"] = value_of_size(SMALL)
    assert await store.release() is SaveResult.CREATED
    assert (await small.read(sid))["k"] == value_of_size(SMALL)


async def test_a_new_session_over_max_size_is_refused_and_nothing_written(
    small: MySQLSessionProvider, db: Database, table: str
) -> None:
    store = await small.read(small.new_session_id())
    store["k"] = value_of_size(SMALL + 1)
    with pytest.raises(SessionTooLargeError, match=rf"{SMALL + 1} bytes.*max_size={SMALL}"):
        await store.release()
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]


async def test_an_update_over_max_size_is_refused_and_the_row_stays_as_it_was(
    small: MySQLSessionProvider, db: Database, table: str, clock: FakeClock
) -> None:
    sid = await make_session(small, k="small", n=1)
    before = stored(db, table, sid)
    clock.advance(small.touch_after)  # a write now would also move the deadline
    store = await small.read(sid)
    store["n"] = 2
    store["k"] = "x" * SMALL
    with pytest.raises(SessionTooLargeError):
        await store.release()
    assert stored(db, table, sid) == before
    assert dict(await small.read(sid)) == {"k": "small", "n": 1}


async def test_an_in_place_growth_over_max_size_is_refused_and_the_row_stays_as_it_was(
    small: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(small, items=[1])
    before = stored(db, table, sid)
    store = await small.read(sid)
    store["items"].extend(range(100))
    with pytest.raises(SessionTooLargeError):
        await store.release()
    assert stored(db, table, sid) == before


async def test_a_merge_that_grows_over_max_size_is_refused_and_the_other_write_stays(
    small: MySQLSessionProvider, db: Database, table: str
) -> None:
    # Each writer fits on its own; together they do not.
    sid = await make_session(small, a="", b="")
    first, second = await small.read(sid), await small.read(sid)
    first["a"] = "x" * 30
    second["b"] = "y" * 30
    assert await first.release() is SaveResult.UPDATED
    after_first = stored(db, table, sid)
    with pytest.raises(SessionTooLargeError):
        await second.release()
    assert stored(db, table, sid) == after_first
    assert dict(await small.read(sid)) == {"a": "x" * 30, "b": ""}


# -- corrupted rows ------------------------------------------------------------------------

GARBAGE: dict[str, bytes] = {
    "never_used_byte": b"\xc1",
    "truncated_map": b"\x82\xa1a",
    "not_a_map": msgpack.packb(1),
    "a_list": msgpack.packb(["a", 1]),
    "int_keys": msgpack.packb({1: 2}),
    "bytes_keys": msgpack.packb({b"a": 1}, use_bin_type=True),
    "trailing_bytes": msgpack.packb({"a": 1}) + b"\x00",
    "huge_length_header": b"\xdf\xff\xff\xff\xff",
    "random": bytes(range(255, 0, -7)),
    "text": b"{'user': 'ada'}",
    "invalid_utf8_str": b"\x81\xa1a\xa2\xff\xfe",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_a_corrupted_row_reads_as_absent_and_is_logged(
    provider: MySQLSessionProvider,
    db: Database,
    table: str,
    caplog: pytest.LogCaptureFixture,
    garbage: bytes,
) -> None:
    sid = await make_session(provider, user="ada")
    db.query(f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s", (garbage, key_of(sid)))
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        store = await provider.read(sid)
    assert store.is_new and dict(store) == {}
    records = [r for r in caplog.records if r.name == "asgi_mysql_session"]
    assert records and records[0].levelno == logging.WARNING
    assert "undecodable" in caplog.text
    assert sid not in caplog.text  # the raw id never reaches the log


async def test_a_corrupted_row_is_removed_and_the_id_then_reads_as_absent(
    provider: MySQLSessionProvider, db: Database, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await make_session(provider, user="ada")
    db.query(f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s", (b"\xc1", key_of(sid)))
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        assert (await provider.read(sid)).is_new
        assert stored(db, table, sid) == []
        assert not await provider.exist(sid)
        assert (await provider.read(sid)).is_new


async def test_a_request_holding_a_session_that_was_corrupted_meanwhile_does_not_crash(
    provider: MySQLSessionProvider, db: Database, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    store["cart"] = [1]
    db.query(
        f"UPDATE `{table}` SET session_data = %s, session_version = session_version + 1 "
        "WHERE session_key = %s",
        (b"\xc1garbage", key_of(sid)),
    )
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"), pytest.raises(SessionInterrupted):
        await store.release()
    assert "undecodable" in caplog.text
    assert stored(db, table, sid) == []


async def test_a_new_session_can_be_started_in_place_of_a_corrupted_one(
    provider: MySQLSessionProvider, db: Database, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await make_session(provider, user="ada")
    db.query(f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s", (b"\xc1", key_of(sid)))
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        store = await provider.read(sid)
    store["fresh"] = 1
    assert await store.release() is SaveResult.CREATED
    assert dict(await provider.read(store.session_id)) == {"fresh": 1}
