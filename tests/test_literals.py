"""asgi_mysql_session.literals: what each value becomes in SQL, and that MariaDB reads it back.

The literals must mean the same with and without NO_BACKSLASH_ESCAPES (the provider's pool
sets a sql_mode without it, a pool passed in with ``pool=`` may run the server's, with it), so
every round trip below runs under both modes.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import uuid
from collections.abc import Iterator
from typing import Any

import aiomysql
import pymysql
import pytest
from conftest import MYSQL_URL, FakeClock, make_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_mysql_session import MySQLSessionProvider
from asgi_mysql_session.dsn import parse_dsn
from asgi_mysql_session.literals import literal, render
from asgi_mysql_session.pool import SQL_MODE

MODES = {"provider": SQL_MODE, "no_backslash_escapes": SQL_MODE + ",NO_BACKSLASH_ESCAPES"}

HOSTILE = [
    "",
    "'",
    "''",
    "\\",
    "\\'",
    "'\\",
    "\\\\'; DROP TABLE x; --",
    "it's",
    '"double" `back`',
    "a\x00b",
    "\x1a\r\n\t\b",
    "100%",
    "%s %% %(x)s",
    "café ünïcödé",
    "😀 emoji 4-byte 𝄞",
    "\\😀'",
    "_utf8mb4 X'00'",
    "X'41'",
    "\u2028\ufeff",
    "".join(map(chr, range(128))),
]

SOME_TEXT = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- the specification ---------------------------------------------------------------


def test_without_args_the_statement_is_sent_as_it_is() -> None:
    assert render("SELECT '100%' LIKE '%s'", ()) == "SELECT '100%' LIKE '%s'"
    assert render("SELECT 1", []) == "SELECT 1"


def test_with_args_each_placeholder_takes_one_literal_and_a_double_percent_is_one() -> None:
    assert render("SELECT %s, '%%', %s", ("a", 1)) == "SELECT 'a', '%', 1"
    assert render("UPDATE t SET a = %s WHERE k = %s", [None, b"\x00\xff"]) == (
        "UPDATE t SET a = NULL WHERE k = X'00ff'"
    )


def test_a_wrong_number_of_args_is_refused() -> None:
    with pytest.raises(TypeError):
        render("SELECT %s, %s", ("a",))
    with pytest.raises(TypeError):
        render("SELECT %s", ("a", "b"))


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        ("", "''"),
        ("abc", "'abc'"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ('a\x00\n\r\x1a"b', "'a\x00\n\r\x1a\"b'"),  # nothing but the quote is special here
        ("100%", "'100%'"),
        ("é😀", "'é😀'"),  # sent as is: the connection's utf8mb4
        ("\\", "_utf8mb4 X'5c'"),  # a backslash means two things: hex, the same in both modes
        ("a\\'é", "_utf8mb4 X'615c27c3a9'"),
        (b"", "X''"),
        (b"\x00'\\\xff", "X'00275cff'"),
        (bytearray(b"ab"), "X'6162'"),
        (memoryview(b"ab"), "X'6162'"),
        (0, "0"),
        (-42, "-42"),
        (2**64, "18446744073709551616"),
        (True, "1"),
        (False, "0"),
        (1.5, "1.5e0"),  # a DOUBLE, not a DECIMAL, as the driver sends it
        (-0.0, "-0.0e0"),
        (1e16, "1e+16"),
        (None, "NULL"),
    ],
)
def test_literal_of_each_bound_type(value: object, sql: str) -> None:
    assert literal(value) == sql
    assert render("%s", (value,)) == sql


class Level(enum.IntEnum):
    HIGH = 3


class Kind(str, enum.Enum):
    A = "a'b"


class Text(str):
    pass


def test_a_subclass_is_written_as_its_base_type() -> None:
    assert render("%s %s %s", (Level.HIGH, Text("x'"), Kind.A)) == "3 'x''' 'a''b'"


@pytest.mark.parametrize(
    "value",
    [decimal.Decimal("1.5"), datetime.datetime(2030, 1, 1), [1], (1,), {"a": 1}, {1}, object(), 1j],
)
def test_a_type_the_package_does_not_bind_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match="cannot bind"):
        literal(value)
    with pytest.raises(TypeError, match="cannot bind"):
        render("SELECT %s, %s", ("a", value))


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_float_without_a_literal_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="no SQL literal"):
        literal(value)


# -- against MariaDB, under both modes --------------------------------------------------


class Server:
    """A cursor on a utf8mb4 connection in one sql_mode, and a table to store values in."""

    def __init__(self, cur: Any, table: str) -> None:
        self.cur = cur
        self.table = table

    def select(self, statement: str) -> tuple[Any, ...]:
        self.cur.execute(statement)  # no args: PyMySQL sends the text as it is
        row = self.cur.fetchone()
        assert row is not None
        return tuple(row)

    def stored(self, s: str | None, b: bytes | None) -> tuple[Any, ...]:
        """Insert through render(), read the row back, and find it by comparing with the literals."""
        self.cur.execute(render(f"INSERT INTO `{self.table}` (s, b) VALUES (%s, %s)", (s, b)))
        row_id = self.cur.lastrowid
        row = self.select(render(f"SELECT s, b FROM `{self.table}` WHERE id = %s", (row_id,)))
        # The column's utf8mb4_bin collation decides the comparison (the literal is coercible).
        match = "s = %s AND b IS NULL" if b is None else "s IS NULL AND b = %s"
        count = f"SELECT COUNT(*) FROM `{self.table}` WHERE id = %s AND {match}"
        assert self.select(render(count, (row_id, s if b is None else b))) == (1,)
        return row


@pytest.fixture(scope="module", params=sorted(MODES))
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    conn = pymysql.connect(**parse_dsn(MYSQL_URL).pymysql_args(), charset="utf8mb4", autocommit=True)
    table = f"t_literals_{uuid.uuid4().hex[:16]}"
    with conn.cursor() as cur:
        cur.execute(f"SET SESSION sql_mode = '{MODES[request.param]}'")
        cur.execute("SELECT @@SESSION.sql_mode")
        assert ("NO_BACKSLASH_ESCAPES" in cur.fetchone()[0]) is (request.param != "provider")
        cur.execute(
            f"CREATE TABLE `{table}` (id INT AUTO_INCREMENT PRIMARY KEY, "
            "s VARCHAR(2000) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, b MEDIUMBLOB NULL)"
        )
        try:
            yield Server(cur, table)
        finally:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            conn.close()


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_round_trip(server: Server, text: str) -> None:
    assert server.select(render("SELECT %s, HEX(%s), %s", (text, text, "after"))) == (
        text,
        text.encode().hex().upper(),
        "after",
    )
    assert server.stored(text, None) == (text, None)


def test_every_byte_value_round_trips(server: Server) -> None:
    every = bytes(range(256))
    assert server.select(render("SELECT %s", (every,))) == (every,)
    singles = [bytes([i]) for i in range(256)]
    assert server.select(render("SELECT " + ", ".join(["%s"] * 256), singles)) == tuple(singles)
    assert server.stored(None, every) == (None, every)
    assert server.select(render("SELECT %s, %s, %s", (bytearray(every), memoryview(every), b""))) == (
        every,
        every,
        b"",
    )


def test_numbers_and_null_round_trip(server: Server) -> None:
    values = (0, -1, 2**63 - 1, -(2**63), 2**64 - 1, True, False, 1.5, -2.25e-300, 1e300, None)
    got = server.select(render("SELECT " + ", ".join(["%s"] * len(values)), values))
    assert got == (0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1, 0, 1.5, -2.25e-300, 1e300, None)


@SOME_TEXT
@given(text=st.text(max_size=300))
def test_any_text_round_trips(server: Server, text: str) -> None:
    assert server.select(render("SELECT %s", (text,))) == (text,)
    assert server.stored(text, None) == (text, None)


@SOME_TEXT
@given(data=st.binary(max_size=1000))
def test_any_bytes_round_trip(server: Server, data: bytes) -> None:
    assert server.select(render("SELECT %s", (data,))) == (data,)
    assert server.stored(None, data) == (None, data)


# -- through the provider, with the driver's connection -----------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_the_provider_stores_hostile_owners_and_bytes_in_either_mode(
    table: str, clock: FakeClock, mode: str
) -> None:
    """A pool passed in may run with NO_BACKSLASH_ESCAPES: owners and data come back the same."""
    kwargs = MySQLSessionProvider.connect_kwargs()
    kwargs["init_command"] = f"SET SESSION sql_mode = '{MODES[mode]}'"
    dsn = parse_dsn(MYSQL_URL).pymysql_args()
    pool = await aiomysql.create_pool(
        host=dsn["host"],
        port=dsn["port"],
        user=dsn["user"],
        password=dsn["password"] or "",
        db=dsn["database"],
        minsize=1,
        maxsize=2,
        **kwargs,
    )
    owners = ["Ada\\'; --", "ada\\'; --", "it's 100%", "😀\\x00"]  # the first two differ by case only
    try:
        async with MySQLSessionProvider(
            pool=pool, table=table, create_table=True, clock=clock, gc_interval=None
        ) as provider:
            sids = {
                owner: await make_session(provider, owner=owner, raw=bytes(range(256)), text=owner)
                for owner in owners
            }
            for owner, sid in sids.items():
                store = await provider.read(sid)
                assert store.owner == owner
                assert dict(store) == {"raw": bytes(range(256)), "text": owner}
                assert len(await provider.sessions_of(owner)) == 1
            assert await provider.destroy_owner(owners[0]) == 1
            assert len(await provider.sessions_of(owners[1])) == 1
    finally:
        pool.close()
        await pool.wait_closed()
