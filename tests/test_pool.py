"""The connection pool: bounded, first come first served, nothing lost to cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from conftest import MYSQL_URL
from faultproxy import FaultProxy

from asgi_mysql_session import MySQLSessionProvider
from asgi_mysql_session.pool import ConnectionPool


def new_pool(recycle: float = 3600) -> ConnectionPool:
    """At least one connection (once filled), at most two, to the test server."""
    parts = urlsplit(MYSQL_URL)
    return ConnectionPool(
        1,
        2,
        recycle,
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        db=parts.path.lstrip("/"),
        **MySQLSessionProvider.connect_kwargs(),
    )


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    connection_pool = new_pool()
    await connection_pool.fill()
    yield connection_pool
    connection_pool.terminate()


async def test_fill_opens_minsize_connections(pool: ConnectionPool) -> None:
    assert pool.size == pool.freesize == 1


async def test_never_more_than_maxsize_connections(pool: ConnectionPool) -> None:
    first, second = await pool.acquire(), await pool.acquire()
    third = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    assert pool.size == 2 and not third.done()
    pool.release(first)
    assert await asyncio.wait_for(third, 5) is first
    pool.release(second)
    pool.release(first)
    assert pool.size == 2 and pool.freesize == 2


@pytest.mark.parametrize("broken", [False, True], ids=["a connection", "a place to open one"])
async def test_what_is_handed_to_a_waiter_still_counts_toward_maxsize(
    pool: ConnectionPool, broken: bool
) -> None:
    first, second = await pool.acquire(), await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    newcomer = asyncio.create_task(pool.acquire())  # runs before the waiter wakes up
    if broken:
        first.close()  # its place goes to the waiter, which opens a fresh connection
    pool.release(first)
    assert pool.size == 2
    got = await asyncio.wait_for(waiting, 5)
    assert (got is not first) if broken else (got is first)
    await asyncio.sleep(0.05)
    assert not newcomer.done() and pool.size == 2  # it queued: no third connection
    pool.release(got)
    assert await asyncio.wait_for(newcomer, 5) is got
    pool.release(got)
    pool.release(second)
    assert pool.size == pool.freesize == 2


async def test_a_place_kept_for_a_cancelled_waiter_passes_to_the_next(pool: ConnectionPool) -> None:
    first, second = await pool.acquire(), await pool.acquire()
    cancelled = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    next_in_line = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    first.close()
    pool.release(first)  # the right to open one goes to the first waiter...
    cancelled.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    fresh = await asyncio.wait_for(next_in_line, 5)
    assert not fresh.closed and pool.size == 2
    pool.release(fresh)
    pool.release(second)
    assert pool.size == pool.freesize == 2


async def test_churn_never_opens_more_than_maxsize(pool: ConnectionPool) -> None:
    handed_out: list[object] = []  # every connection acquired (kept, so none is collected)

    async def user() -> None:
        for _ in range(20):
            conn = await pool.acquire()
            assert not conn.closed
            handed_out.append(conn)
            await asyncio.sleep(0)
            pool.release(conn)

    # One user more than connections: a release often empties the queue of waiters.
    await asyncio.wait_for(asyncio.gather(*(user() for _ in range(3))), 30)
    # Every connection opened is handed to the one who opened it: the fixture's and at most
    # one more were ever opened.
    assert len({id(conn) for conn in handed_out}) <= 2
    assert pool.size == pool.freesize == 2


async def test_waiters_are_served_first_come_first_served(pool: ConnectionPool) -> None:
    held = [await pool.acquire(), await pool.acquire()]
    order: list[int] = []

    async def waiter(i: int) -> None:
        conn = await pool.acquire()
        order.append(i)
        await asyncio.sleep(0)
        pool.release(conn)

    tasks = [asyncio.create_task(waiter(i)) for i in range(6)]
    await asyncio.sleep(0)
    for conn in held:
        pool.release(conn)
    # A newcomer arriving now queues behind the waiters instead of taking a freed connection.
    tasks.append(asyncio.create_task(waiter(99)))
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3, 4, 5, 99]


async def test_a_waiter_cancelled_as_it_is_served_gives_the_connection_back(pool: ConnectionPool) -> None:
    first, second = await pool.acquire(), await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    pool.release(first)  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.in_use == 1 and pool.freesize == 1 and pool.size == 2  # only second is out
    assert await pool.acquire() is first  # back in the pool, and handed out again
    pool.release(first)
    pool.release(second)


async def test_a_closed_connection_frees_its_place_for_a_waiter(pool: ConnectionPool) -> None:
    first, second = await pool.acquire(), await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    first.close()
    pool.release(first)  # broken: the waiter opens a fresh connection instead
    fresh = await asyncio.wait_for(waiting, 5)
    assert fresh is not first and not fresh.closed
    pool.release(fresh)
    pool.release(second)
    assert pool.size == 2


async def test_a_connection_the_server_closed_is_not_handed_out(pool: ConnectionPool) -> None:
    victim, killer = await pool.acquire(), await pool.acquire()
    cur = await victim.cursor()
    await cur.execute("SELECT CONNECTION_ID()")
    [(victim_id,)] = await cur.fetchall()
    await (await killer.cursor()).execute(f"KILL {int(victim_id)}")
    pool.release(victim)
    pool.release(killer)
    await asyncio.sleep(0.05)  # let the EOF arrive on the killed socket
    got = [await pool.acquire(), await pool.acquire()]
    assert victim not in got and all(not c.closed for c in got)
    assert victim.closed
    for c in got:
        pool.release(c)


async def test_cancelled_handshake_leaves_no_capacity_taken(pool: ConnectionPool) -> None:
    held = await pool.acquire()
    opening = asyncio.create_task(pool.acquire())  # room for one more: it connects
    await asyncio.sleep(0)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert pool.size == 1
    pool.release(held)


async def test_an_attempt_abandoned_in_the_handshake_is_closed_and_frees_its_place() -> None:
    host, _, port = MYSQL_URL.split("@", 1)[1].split("/", 1)[0].partition(":")
    async with FaultProxy(host, int(port or 3306)) as proxy:
        proxy.blackhole(True)  # accepts TCP, never sends the server greeting
        silent = ConnectionPool(
            0, 1, 3600, host="127.0.0.1", port=proxy.port, user="root", connect_timeout=30
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(silent.acquire(), 0.3)
        assert silent.size == 0
        async with asyncio.timeout(10):
            while proxy.open_connections:  # noqa: ASYNC110 - the proxy's own counter
                await asyncio.sleep(0.02)
        proxy.blackhole(False)
        conn = await asyncio.wait_for(silent.acquire(), 10)  # the place is free again
        silent.release(conn)
        silent.terminate()


async def test_a_connection_older_than_recycle_is_replaced() -> None:
    pool = new_pool(recycle=0.05)
    try:
        old = await pool.acquire()
        await (await old.cursor()).execute("SELECT 1")  # stamps its last use
        pool.release(old)
        await asyncio.sleep(0.1)
        fresh = await pool.acquire()
        assert fresh is not old and old.closed and not fresh.closed
        pool.release(fresh)
        again = await pool.acquire()  # used just now: kept
        assert again is fresh
        pool.release(again)
    finally:
        pool.terminate()
