"""Every aiomysql/PyMySQL internal that driver.py relies on, one test each.

A driver release that renames or removes one fails here by name (and, at run time,
``driver.check`` refuses to open with a message naming it) instead of breaking requests.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator

import aiomysql
import pymysql
import pytest
from conftest import MYSQL_URL

from asgi_mysql_session import SessionConfigError, driver
from asgi_mysql_session.dsn import parse_dsn
from asgi_mysql_session.pool import connect_kwargs


@pytest.fixture
async def conn() -> AsyncIterator[driver.Connection]:
    connection = driver.new_connection(**_kwargs())
    await driver.handshake(connection)
    yield connection
    connection.close()


async def test_handshake_connects_through_the_internal_connect(conn: driver.Connection) -> None:
    assert callable(aiomysql.Connection._connect), "aiomysql removed Connection._connect()"
    assert not conn.closed


async def test_send_runs_a_statement_through_the_internal_query(conn: driver.Connection) -> None:
    assert "sql" in inspect.signature(aiomysql.Connection.query).parameters, "Connection.query(sql) changed"
    assert await driver.send(conn, "DO 1") == 0


async def test_rows_reads_the_internal_result_of_the_last_statement(conn: driver.Connection) -> None:
    await driver.send(conn, "SELECT 1, 'a' UNION ALL SELECT 2, 'b'")
    assert hasattr(conn, "_result") and hasattr(conn._result, "rows"), "aiomysql removed _result.rows"
    assert list(driver.rows(conn)) == [(1, "a"), (2, "b")]
    await driver.send(conn, "DO 1")
    assert list(driver.rows(conn)) == []


async def test_mark_used_sets_the_internal_last_usage_that_last_usage_reads(conn: driver.Connection) -> None:
    driver.mark_used(conn, 12345.0)
    assert conn.last_usage == 12345.0, "aiomysql's last_usage no longer reads _last_usage"


async def test_reusable_reads_the_internal_reader_and_its_public_eof_flag(conn: driver.Connection) -> None:
    assert hasattr(conn, "_reader") and hasattr(conn._reader, "eof_received"), "aiomysql's stream changed"
    now = asyncio.get_running_loop().time()
    driver.mark_used(conn, now)
    assert driver.reusable(conn, -1, now)
    assert driver.reusable(conn, 10, now + 5)
    assert not driver.reusable(conn, 10, now + 11), "older than pool_recycle"


async def test_reusable_refuses_a_connection_the_server_closed(conn: driver.Connection) -> None:
    [(thread_id,)] = await _select(conn, "SELECT CONNECTION_ID()")
    other = driver.new_connection(**_kwargs())
    await driver.handshake(other)
    try:
        await driver.send(other, f"KILL {int(thread_id)}")
    finally:
        other.close()
    for _ in range(100):  # the EOF arrives asynchronously
        if not driver.reusable(conn, -1, 0.0):
            break
        await asyncio.sleep(0.01)
    assert not driver.reusable(conn, -1, 0.0)


async def test_close_on_dead_loop_clears_the_internal_streams_and_closes_the_socket(
    conn: driver.Connection,
) -> None:
    transport = conn._writer.transport
    sock = transport.get_extra_info("socket")
    fileno = sock.fileno()
    driver.close_on_dead_loop(conn)
    assert conn._writer is None and conn._reader is None and conn.closed
    with pytest.raises(OSError):
        socket.socket(fileno=fileno).close()  # the descriptor is gone


async def test_pooled_and_wake_use_the_internals_of_aiomysqls_pool() -> None:
    pool = await aiomysql.create_pool(minsize=1, maxsize=1, **_kwargs())
    try:
        assert hasattr(pool, "_cond") and hasattr(pool, "_free") and hasattr(pool, "_used")
        assert len(driver.pooled(pool)) == 1
        await driver.wake(pool)  # notifies a waiter (none here) without error
    finally:
        pool.close()
        await pool.wait_closed()


async def test_check_accepts_the_installed_drivers(conn: driver.Connection) -> None:
    driver.check(conn)


async def test_check_names_an_internal_a_driver_release_removed(conn: driver.Connection) -> None:
    class Stripped:
        def __init__(self, real: driver.Connection) -> None:
            self._connect = real._connect
            self.query = real.query
            self._last_usage = real._last_usage
            self._reader = real._reader
            self._writer = real._writer  # no _result

    with pytest.raises(SessionConfigError, match=r"Connection\._result"):
        driver.check(Stripped(conn))


def test_error_codes_are_read_from_driver_errors() -> None:
    assert driver.error_code(pymysql.err.OperationalError(2013, "Lost connection")) == 2013
    assert driver.error_code(ValueError("x")) is None
    assert driver.is_server_error(pymysql.err.IntegrityError(1062, "dup"))
    assert not driver.is_server_error(pymysql.err.OperationalError(2006, "gone"))
    assert driver.lost_read("SELECT 1", pymysql.err.OperationalError(2013, "lost"))
    assert not driver.lost_read("UPDATE t SET a = 1", pymysql.err.OperationalError(2013, "lost"))


async def _select(conn: driver.Connection, statement: str) -> list[tuple[object, ...]]:
    await driver.send(conn, statement)
    return list(driver.rows(conn))


def _kwargs() -> dict[str, object]:
    dsn = parse_dsn(MYSQL_URL)
    return {
        "host": dsn.host,
        "port": dsn.port,
        "user": dsn.user,
        "password": dsn.password,
        "db": dsn.database,
        **connect_kwargs(),
    }
