"""Hostile input, property-based: cookies and header ids, session data, sizes, corrupted rows.

Every property runs against the real database, without mocks. A test opens one provider on
its own event loop and reuses it for all of hypothesis' examples (async fixtures do not mix
with ``@given``); every example starts from an empty table.

The properties:

* any ``Cookie`` header bytes (or ``X-Session-Id`` header bytes in header mode) give a 200,
  never a 500 or a database error; other sessions are untouched; a route that does not write
  creates no row; a route that writes gets a fresh id that appears nowhere in what the client
  sent, and that id's SHA-256 hex is the only new row;
* arbitrary msgpack-typed session data round-trips through the database byte for byte
  (msgpack bytes are compared, so 1 is not 1.0 is not True, and nan/-0.0 are exact);
* values outside the supported set are refused with ``TypeError`` naming the key when set,
  or at save time when smuggled in by in-place mutation, and the stored row stays
  byte-identical;
* around ``max_size`` a session is either stored exactly or refused with
  ``SessionTooLargeError`` (413 over HTTP), the old row byte-identical;
* a row holding any bytes reads as a usable session or as absent (logged), never an
  exception, and a request presenting it never gets a 500;
* nested lists of any depth are stored exactly or refused cleanly (``TypeError`` or a
  ``SessionError``, row intact), under Python's default recursion limit and a raised one;
  a deeply nested row never crashes a request.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import string
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import msgpack
import pytest
from conftest import MYSQL_URL, Database, FakeClock
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider, SaveResult, SessionError, SessionTooLargeError
from asgi_mysql_session.ids import is_well_formed
from asgi_mysql_session.serializer import encode

T = TypeVar("T")
LOGGER = "asgi_mysql_session"
SMALL = 256  # max_size of the provider used for the size properties

EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Near the recursion limit, the explain phase's line tracing moves the point of failure.
NO_EXPLAIN = settings(EXAMPLES, phases=[p for p in Phase if p is not Phase.explain], max_examples=40)


def pack(value: Any) -> bytes:
    """Type-exact, nan-aware identity of a value: its msgpack bytes."""
    return msgpack.packb(value, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]


def key_of(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


# -- harness: one loop and one open provider per test, an empty table per example ----------


class Harness:
    def __init__(self, table: str, db: Database, clock: FakeClock, **options: Any) -> None:
        self.table = table
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.provider = MySQLSessionProvider(
            MYSQL_URL, table=table, create_table=True, gc_interval=None, clock=clock, **options
        )
        self.run(self.provider.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def example(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one example against an empty table."""
        self.db.query(f"DELETE FROM `{self.table}`")
        result = self.run(coro)
        assert not self.provider.pool_state().in_use, "a connection is still checked out"
        return result

    def rows(self) -> dict[str, tuple[object, ...]]:
        """Every row by session_key: data, version, expiry, created, owner."""
        found = self.db.query(
            "SELECT session_key, session_data, session_version, session_expiry, session_created, "
            f"session_owner FROM `{self.table}`"
        )
        return {str(row[0]): tuple(row[1:]) for row in found}

    def corrupt(self, sid: str, raw: bytes) -> None:
        self.db.query(
            f"UPDATE `{self.table}` SET session_data = %s WHERE session_key = %s", (raw, key_of(sid))
        )

    def close(self) -> None:
        try:
            self.run(self.provider.close())
        finally:
            self.loop.close()


@pytest.fixture
def harness(table: str, db: Database, clock: FakeClock) -> Iterator[Harness]:
    h = Harness(table, db, clock)
    yield h
    h.close()


@pytest.fixture
def small(table: str, db: Database, clock: FakeClock) -> Iterator[Harness]:
    h = Harness(table, db, clock, max_size=SMALL)
    yield h
    h.close()


@pytest.fixture
def warnings_seen(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


async def create_session(provider: MySQLSessionProvider, data: dict[str, Any]) -> str:
    sid = provider.new_session_id()
    store = await provider.read(sid)
    store.update(data)
    assert await store.release() is SaveResult.CREATED
    return sid


# -- strategies: session data ---------------------------------------------------------------

SQL = [
    "' OR '1'='1",
    "'; DROP TABLE session; --",
    '" OR 1=1 --',
    "1; SELECT SLEEP(5)",
    "x' UNION SELECT session_data FROM session -- ",
    "\\'; --",
    "%s",
    "%(x)s",
    "\x00",
    "NULL",
]
TEXT = st.text(max_size=24) | st.sampled_from(SQL)
INTS = st.integers(-(2**63), 2**64 - 1) | st.sampled_from([-(2**63), 2**63 - 1, 2**63, 2**64 - 1, -1, 0])
LEAVES = st.none() | st.booleans() | INTS | st.floats() | TEXT | st.binary(max_size=48)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
SESSION_DATA = st.dictionaries(TEXT, VALUES, max_size=6)


class Color(enum.IntEnum):
    RED = 1


class Label(str):
    pass


SURROGATE_TEXT = st.builds(
    lambda a, s, b: a + s + b, TEXT, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), TEXT
)
BAD_KEYS = st.one_of(
    st.integers(),
    st.binary(max_size=4),
    st.none(),
    st.booleans(),
    st.tuples(st.integers()),
    st.floats(allow_nan=False),
    SURROGATE_TEXT,
    st.builds(Label, TEXT),
)
BAD_LEAVES = st.one_of(
    st.lists(LEAVES, max_size=3).map(tuple),
    st.sets(st.integers(), max_size=3),
    st.frozensets(TEXT, max_size=3),
    st.integers(min_value=2**64),
    st.integers(max_value=-(2**63) - 1),
    st.builds(bytearray, st.binary(max_size=8)),
    st.builds(memoryview, st.binary(max_size=8)),
    st.just(Color.RED),
    st.builds(Label, TEXT),
    st.datetimes(),
    st.dates(),
    st.decimals(allow_nan=False),
    st.complex_numbers(),
    st.builds(object),
    SURROGATE_TEXT,
    st.builds(
        # A good key equal to the bad one (a str subclass equals its str) is dropped first:
        # otherwise the dict keeps the good key object and the value is not bad at all.
        lambda good, key, value: {**{k: v for k, v in good.items() if k != key}, key: value},
        st.dictionaries(TEXT, LEAVES, max_size=2),
        BAD_KEYS,
        LEAVES,
    ),
)


def _around(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Put ``inner`` somewhere inside valid lists and dicts."""
    return st.builds(
        lambda before, value, after: [*before, value, *after],
        st.lists(LEAVES, max_size=2),
        inner,
        st.lists(LEAVES, max_size=2),
    ) | st.builds(
        lambda good, key, value: {**good, key: value}, st.dictionaries(TEXT, LEAVES, max_size=2), TEXT, inner
    )


BAD_VALUES = st.recursive(BAD_LEAVES, _around, max_leaves=4)


# -- strategies: cookies and headers -----------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "-_"
WELL_FORMED = st.text(ID_CHARS, min_size=16, max_size=128)  # these reach the database


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


HUGE = st.builds(
    lambda unit, n: (unit * n)[:n],
    st.sampled_from([b"x", b"A1_-", b"\x00", b"\xff\xfe", _utf8("é"), b"' OR 1=1 -- ", b"session=", b";"]),
    st.integers(1_000, 100_000),
)
CONTROL = st.text(
    st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x85\xa0\u2028\ufeff"), max_size=12
)
COOKIE_VALUES = st.one_of(
    WELL_FORMED.map(str.encode),
    st.text(ID_CHARS, max_size=200).map(str.encode),  # right alphabet, often wrong length
    TEXT.map(_utf8),
    CONTROL.map(_utf8),
    SURROGATE_TEXT.map(_utf8),
    st.binary(max_size=80),
    st.builds(
        lambda a, sid, b: a + sid + b, CONTROL.map(_utf8), WELL_FORMED.map(str.encode), CONTROL.map(_utf8)
    ),
    st.builds(lambda sid: b'"' + sid + b'"', WELL_FORMED.map(str.encode)),
    HUGE,
)
COOKIE_NAMES = st.sampled_from(
    [
        b"session",
        b"session",
        b"Session",
        b"SESSION",
        b" session",
        b"session ",
        b"\tsession",
        b"sessionid",
        b"x",
    ]
) | st.binary(max_size=8)
SEPARATORS = st.sampled_from([b"; ", b";", b" ; ", b";;", b", ", b"\t;\t", b"\r\n", b""])
PAIRS = st.builds(lambda name, value: name + b"=" + value, COOKIE_NAMES, COOKIE_VALUES) | COOKIE_VALUES
COOKIE_HEADER = st.one_of(
    st.lists(st.tuples(SEPARATORS, PAIRS), max_size=6).map(lambda parts: b"".join(s + p for s, p in parts)),
    # several cookies with the same name
    st.lists(COOKIE_VALUES, min_size=2, max_size=5).map(
        lambda values: b"; ".join(b"session=" + v for v in values)
    ),
    st.binary(max_size=200),
    HUGE,
)
COOKIE_HEADERS = st.lists(st.tuples(st.just(b"cookie"), COOKIE_HEADER), min_size=1, max_size=4)
ID_HEADERS = st.lists(
    st.tuples(st.sampled_from([b"x-session-id", b"X-Session-Id", b"X-SESSION-ID"]), COOKIE_VALUES),
    min_size=1,
    max_size=4,
) | st.builds(
    lambda ids, cookies: ids + cookies,
    st.lists(st.tuples(st.just(b"x-session-id"), COOKIE_VALUES), min_size=1, max_size=2),
    COOKIE_HEADERS,
)

WRITES = ["/set?a=1", "/incr", "/login", "/cached"]
READS = ["/read", "/noop", "/logout"]
ROUTES = st.sampled_from(WRITES + READS)


def issued_id(response: Any, header_mode: bool) -> str | None:
    """The live id the response hands out ("" for an expiring cookie or header)."""
    if header_mode:
        value = response.headers.get("x-session-id")
        return None if value is None else str(value)
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == "session":
            return str(rest.split(";", 1)[0])
    return None


async def hostile_request(h: Harness, headers: list[tuple[bytes, bytes]], route: str, **options: Any) -> None:
    provider = h.provider
    victim = key_of(await create_session(provider, {"user": "victim"}))
    before = h.rows()
    async with client(make_app(provider, **options)) as http:
        response = await http.get(route, headers=headers)
    assert response.status_code == 200, (response.status_code, response.text)
    after = h.rows()
    assert after[victim] == before[victim], "another session was changed"
    new = set(after) - set(before)
    issued = issued_id(response, header_mode="header_name" in options)
    if route in WRITES:
        assert issued is not None and is_well_formed(issued), issued
        sent = b"\n".join(value for _, value in headers)
        assert issued.encode() not in sent, "a client-chosen id was adopted"
        assert new == {key_of(issued)}
    else:
        assert new == set(), "a route that does not write created a row"
        assert not issued, "a live id was issued by a route that does not write"


@EXAMPLES
@given(headers=COOKIE_HEADERS, route=ROUTES)
@example(headers=[(b"cookie", b"session=" + b"A" * 43 + b"; session=' OR 1=1 --")], route="/set?a=1")
@example(headers=[(b"cookie", b"session=junk"), (b"cookie", b"session=" + b"b" * 128)], route="/incr")
@example(headers=[(b"cookie", b"session=" + b"\xff" * 100_000)], route="/read")
def test_hostile_cookie_headers_are_anonymous_and_never_adopted(
    harness: Harness, headers: list[tuple[bytes, bytes]], route: str
) -> None:
    harness.example(hostile_request(harness, headers, route))


@EXAMPLES
@given(headers=ID_HEADERS, route=ROUTES)
@example(headers=[(b"x-session-id", b"  " + b"A" * 43 + b"\t")], route="/login")
@example(
    headers=[(b"x-session-id", b"'; DROP TABLE session; --"), (b"x-session-id", b"c" * 40)], route="/set?a=1"
)
def test_hostile_session_id_headers_are_anonymous_and_never_adopted(
    harness: Harness, headers: list[tuple[bytes, bytes]], route: str
) -> None:
    harness.example(hostile_request(harness, headers, route, header_name="X-Session-Id"))


# -- session data --------------------------------------------------------------------------


async def write_and_read_back(h: Harness, first: dict[str, Any], second: dict[str, Any]) -> None:
    provider = h.provider
    sid = provider.new_session_id()
    store = await provider.read(sid)
    for key, value in first.items():
        store[key] = value
    created = await store.release()
    if not first:
        assert created is SaveResult.NOTHING and h.rows() == {}
    else:
        assert created is SaveResult.CREATED
        assert h.rows()[key_of(sid)][0] == pack(first)
        assert pack(dict(await provider.read(sid))) == pack(first)

    store = await provider.read(sid)
    store.clear()
    store.update(second)
    result = await store.release()
    if not second:
        assert result in (SaveResult.NOTHING, SaveResult.DESTROYED) and h.rows() == {}
        return
    # clear() is a logout: what is set after it is a new session under a new id.
    assert result is SaveResult.CREATED
    if first:
        assert store.session_id != sid and not await provider.exist(sid)
    assert h.rows()[key_of(store.session_id)][0] == pack(second)
    assert pack(dict(await provider.read(store.session_id))) == pack(second)


@EXAMPLES
@given(first=SESSION_DATA, second=SESSION_DATA)
@example(
    first={"nan": float("nan"), "inf": [float("inf"), float("-inf"), -0.0], "big": [2**64 - 1, -(2**63)]},
    second={"b": b"\x00\xff", "t": "\u0000é😀", "n": {"1": True, "x": 1, "y": 1.0, "z": None}},
)
def test_session_data_round_trips_exactly(
    harness: Harness, first: dict[str, Any], second: dict[str, Any]
) -> None:
    harness.example(write_and_read_back(harness, first, second))


async def refuse_bad_values(
    h: Harness, old: dict[str, Any], key: str, bad: Any, bad_key: Any, good: Any
) -> None:
    provider = h.provider
    sid = await create_session(provider, old)
    before = h.rows()
    store = await provider.read(sid)
    for attempt in (store.__setitem__, store.set, lambda k, v: store.update({k: v})):
        with pytest.raises(TypeError) as refused:
            attempt(key, bad)
        assert repr(key) in str(refused.value), "the error does not name the key"
    with pytest.raises(TypeError):
        store[bad_key] = good
    assert not store.modified
    assert pack(dict(store)) == pack(old)
    assert await store.release() is SaveResult.NOTHING
    assert h.rows() == before

    # Smuggled in by mutating a stored container in place: refused at save time instead.
    store["box"] = []
    store["box"].append(bad)
    with pytest.raises(TypeError):
        await store.release()
    assert h.rows() == before

    fresh = await provider.read(provider.new_session_id())
    with pytest.raises(TypeError):
        fresh[key] = bad
    assert await fresh.release() is SaveResult.NOTHING
    assert h.rows() == before


@EXAMPLES
@given(
    old=st.dictionaries(TEXT, VALUES, min_size=1, max_size=4),
    key=TEXT,
    bad=BAD_VALUES,
    bad_key=BAD_KEYS,
    good=LEAVES,
)
def test_unsupported_values_are_refused_and_the_stored_row_stays(
    harness: Harness, old: dict[str, Any], key: str, bad: Any, bad_key: Any, good: Any
) -> None:
    harness.example(refuse_bad_values(harness, old, key, bad, bad_key, good))


# -- sizes around max_size ------------------------------------------------------------------

SHORT_KEYS = st.text(ID_CHARS, min_size=1, max_size=8)
SMALL_DATA = st.dictionaries(
    SHORT_KEYS, st.integers(-(2**63), 2**64 - 1) | st.text(ID_CHARS, max_size=16), min_size=1, max_size=3
)
NEAR = st.integers(SMALL - 60, SMALL + 20)
BLOBS = st.builds(
    lambda n, kind: b"\x00" * n if kind == "bytes" else "é" * (n // 2),
    NEAR,
    st.sampled_from(["bytes", "str"]),
)


async def store_near_max_size(h: Harness, old: dict[str, Any], key: str, blob: Any) -> None:
    provider = h.provider
    sid = await create_session(provider, old)
    before = h.rows()
    store = await provider.read(sid)
    store[key] = blob
    wanted = pack(dict(store))
    if len(wanted) <= SMALL:
        assert await store.release() is SaveResult.UPDATED
        assert h.rows()[key_of(sid)][0] == wanted
    else:
        with pytest.raises(SessionTooLargeError, match="max_size"):
            await store.release()
        assert h.rows() == before

    fresh = await provider.read(provider.new_session_id())
    fresh[key] = blob
    wanted = pack({key: blob})
    if len(wanted) <= SMALL:
        assert await fresh.release() is SaveResult.CREATED
        assert h.rows()[key_of(fresh.session_id)][0] == wanted
    else:
        with pytest.raises(SessionTooLargeError):
            await fresh.release()
        assert h.rows() == before


@EXAMPLES
@given(old=SMALL_DATA, key=SHORT_KEYS, blob=BLOBS)
@example(old={"a": 1}, key="b", blob=b"\x00" * (SMALL - len(pack({"a": 1, "b": b""}))))
@example(old={"a": 1}, key="b", blob=b"\x00" * (SMALL + 1 - len(pack({"a": 1, "b": b""}))))
@example(old={"a": 1}, key="b", blob=b"\x00" * (SMALL - len(pack({"b": b""}))))
@example(old={"a": 1}, key="b", blob=b"\x00" * (SMALL + 1 - len(pack({"b": b""}))))
def test_sessions_near_max_size_are_stored_exactly_or_refused_intact(
    small: Harness, old: dict[str, Any], key: str, blob: Any
) -> None:
    small.example(store_near_max_size(small, old, key, blob))


FITS = SMALL - len(pack({"user": "ada", "blob": b""}))


async def too_big_over_http(h: Harness, size: int) -> None:
    provider = h.provider
    sid = await create_session(provider, {"user": "ada"})
    before = h.rows()
    async with client(make_app(provider)) as http:
        response = await http.get("/too-big", params={"size": size}, headers={"cookie": f"session={sid}"})
    wanted = pack({"user": "ada", "blob": b"x" * size})
    if len(wanted) <= SMALL:
        assert response.status_code == 200
        assert h.rows()[key_of(sid)][0] == wanted
    else:
        assert response.status_code == 413, (response.status_code, response.text)
        assert "set-cookie" not in response.headers
        assert h.rows() == before


@settings(EXAMPLES, max_examples=50)
@given(size=st.integers(FITS - 30, FITS + 30))
@example(size=FITS)
@example(size=FITS + 1)
def test_oversized_sessions_over_http_are_413_with_the_row_intact(small: Harness, size: int) -> None:
    small.example(too_big_over_http(small, size))


# -- corrupted rows -------------------------------------------------------------------------

EXT = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
TIMESTAMPS = st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999))
ANY_KEYS = TEXT | st.binary(max_size=4) | st.integers(-(2**63), 2**64 - 1) | st.booleans() | st.none()
WILD = st.recursive(
    LEAVES | EXT | TIMESTAMPS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_KEYS, inner, max_size=3),
    max_leaves=10,
)


def _pack_loose(obj: Any, bin_type: bool = True, single_float: bool = False) -> bytes:
    """msgpack as another writer might produce it: any types, old str/raw, float32."""
    try:
        return msgpack.packb(obj, use_bin_type=bin_type, use_single_float=single_float)  # type: ignore[no-any-return]
    except OverflowError:  # a double too large for float32
        return msgpack.packb(obj, use_bin_type=bin_type)  # type: ignore[no-any-return]


def _mutate(raw: bytes, at: int, byte: int, keep: int) -> bytes:
    at %= len(raw) + 1
    return (raw[:at] + bytes([byte]) + raw[at + 1 :])[:keep]


PACKED_WILD = st.builds(
    _pack_loose, st.dictionaries(TEXT, WILD, max_size=4) | WILD, st.booleans(), st.booleans()
)
# A well-formed str-keyed map with one value msgpack can carry but a session cannot.
SMUGGLED = st.builds(
    lambda good, key, bad: _pack_loose({**good, key: bad}),
    st.dictionaries(TEXT, LEAVES, max_size=3),
    TEXT,
    _around(EXT | TIMESTAMPS | st.dictionaries(st.binary(max_size=4), LEAVES, min_size=1, max_size=2)),
)
MUTATED = st.builds(
    _mutate, SESSION_DATA.map(pack), st.integers(0, 4096), st.integers(0, 255), st.integers(0, 4096)
)
GARBAGE = st.one_of(st.binary(max_size=200), PACKED_WILD, SMUGGLED, MUTATED)


async def read_corrupted(h: Harness, caplog: pytest.LogCaptureFixture, raw: bytes) -> None:
    provider = h.provider
    sid = await create_session(provider, {"user": "ada"})
    h.corrupt(sid, raw)
    caplog.clear()
    store = await provider.read(sid)  # never raises
    if store.is_new:
        assert dict(store) == {}
        assert any(r.name == LOGGER and r.levelno >= logging.WARNING for r in caplog.records), "not logged"
    else:
        data = dict(store)
        # What was read as a session must be a session: storable again, not a time bomb
        # that makes every later write of it fail.
        encode(data)


@EXAMPLES
@given(raw=GARBAGE)
@example(raw=b"")
@example(raw=b"\xc1")
@example(raw=pack({"user": "ada"})[:-1])
@example(raw=pack(["user", "ada"]))
def test_corrupted_rows_read_as_absent_or_as_a_storable_session(
    harness: Harness, warnings_seen: pytest.LogCaptureFixture, raw: bytes
) -> None:
    harness.example(read_corrupted(harness, warnings_seen, raw))


async def present_corrupted(h: Harness, raw: bytes) -> None:
    provider = h.provider
    sid = await create_session(provider, {"user": "ada"})
    h.corrupt(sid, raw)
    async with client(make_app(provider)) as http:
        response = await http.get("/cached", headers={"cookie": f"session={sid}"})
    assert response.status_code < 500, (response.status_code, response.text)


@EXAMPLES
@given(raw=GARBAGE)
@example(raw=b"\xc1")
def test_a_request_presenting_a_corrupted_row_never_gets_a_500(harness: Harness, raw: bytes) -> None:
    harness.example(present_corrupted(harness, raw))


# Python's default recursion limit as a route sees it (an ASGI server and framework already
# use about 50 frames), and a limit an app raised. The headroom is counted from the example's
# own frame, so a failure does not depend on how deep hypothesis happens to call it.
DEFAULT_HEADROOM = 1000 - 50
RAISED_HEADROOM = 10_000
HEADROOMS = st.sampled_from([DEFAULT_HEADROOM, RAISED_HEADROOM])


class recursion_headroom:
    """Allow ``frames`` more frames; a RecursionError fails the example with a short traceback.

    (pytest and hypothesis take seconds to format a traceback 900 frames deep.)
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.saved = sys.getrecursionlimit()

    def __enter__(self) -> None:
        depth, frame = 0, sys._getframe()
        while frame is not None:
            depth, frame = depth + 1, frame.f_back
        sys.setrecursionlimit(depth + self.frames)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        sys.setrecursionlimit(self.saved)
        if isinstance(exc, RecursionError):
            raise AssertionError(f"RecursionError escaped instead of a clear refusal: {exc}") from None


# Any depth, often near where Python's limit and msgpack's own limit (1024 levels) bite.
DEPTHS = st.integers(1, 1100) | st.integers(880, 1030)


def _nested_row(depth: int) -> bytes:
    """{"a": [[[...]]]} with ``depth`` levels of lists, as raw msgpack."""
    return b"\x81\xa1a" + b"\x91" * depth + b"\x90"


@NO_EXPLAIN
@given(depth=DEPTHS, headroom=HEADROOMS)
def test_a_deeply_nested_row_never_crashes_a_request(harness: Harness, depth: int, headroom: int) -> None:
    with recursion_headroom(headroom):
        harness.example(present_corrupted(harness, _nested_row(depth)))


def _nested_value(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


async def set_nested(h: Harness, depth: int) -> None:
    """Nested lists are storable types: stored exactly, or refused cleanly with nothing lost."""
    provider = h.provider
    sid = await create_session(provider, {"user": "ada"})
    before = h.rows()
    store = await provider.read(sid)
    value = _nested_value(depth)
    try:
        store["deep"] = value
    except TypeError:
        assert not store.modified
        assert await store.release() is SaveResult.NOTHING
        assert h.rows() == before
        return
    try:
        result = await store.release()
    except (TypeError, SessionError):
        assert h.rows() == before
        return
    assert result is SaveResult.UPDATED
    assert pack(dict(await provider.read(sid))) == pack({"user": "ada", "deep": value}), "stored but lost"


@NO_EXPLAIN
@given(depth=DEPTHS)
def test_deeply_nested_values_round_trip_or_are_refused_cleanly(harness: Harness, depth: int) -> None:
    with recursion_headroom(DEFAULT_HEADROOM):
        harness.example(set_nested(harness, depth))


@NO_EXPLAIN
@given(depth=DEPTHS)
def test_deeply_nested_values_round_trip_or_are_refused_cleanly_when_the_recursion_limit_is_raised(
    harness: Harness, depth: int
) -> None:
    with recursion_headroom(RAISED_HEADROOM):
        harness.example(set_nested(harness, depth))
