"""The gateway on its own: statements, their deadline, the pool's state, connection setup.

Built directly (conftest's ``gateway`` fixture, or ``new_gateway`` for other options), as the
provider builds its own; what the provider does with it is in the provider's tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from conftest import MYSQL_URL, StatementCounter, new_gateway

from asgi_mysql_session import SessionBackendError
from asgi_mysql_session.coordination import Cluster
from asgi_mysql_session.gateway import Gateway, Link, PoolState


def with_options(options: str) -> str:
    return MYSQL_URL + ("&" if "?" in MYSQL_URL else "?") + options


@asynccontextmanager
async def opened(gateway: Gateway) -> AsyncIterator[Gateway]:
    await gateway.open()
    try:
        yield gateway
    finally:
        await gateway.close()


async def connection_id(run: Gateway | Link) -> int:
    """The server's id of the connection the statement ran on."""
    _, rows = await run.execute("SELECT CONNECTION_ID()")
    return int(rows[0][0])


async def test_bytes_values_bind_as_parameters(gateway: Gateway) -> None:
    # aiomysql 0.3.2 + PyMySQL 1.2 fail here with "'str' object is not callable".
    count, rows = await gateway.execute("SELECT %s", (b"\x00\x01binary\xff",))
    assert count == 1 and rows == ((b"\x00\x01binary\xff",),)


async def test_statements_are_counted_by_kind(gateway: Gateway) -> None:
    statements = StatementCounter(gateway)
    await gateway.execute("SELECT 1")
    async with gateway.connection() as link:
        await link.execute("SELECT 2")
        await link.execute("select 3")
    assert statements.delta() == {"select": 3}


async def test_the_pool_state_counts_what_is_checked_out(gateway: Gateway) -> None:
    idle = gateway.pool_state()
    assert idle == PoolState(idle.size, idle.size, 0, 10, {}) and idle.size >= 1
    async with gateway.connection(), gateway.connection():
        busy = gateway.pool_state()
        assert busy.in_use == 2 and busy.size == busy.free + 2
    assert gateway.pool_state().in_use == 0
    await gateway.close()
    assert gateway.pool_state() == PoolState(0, 0, 0, 10, {})
    await gateway.open()  # for the fixture, which closes it


async def test_a_statement_marks_its_connection_as_just_used() -> None:
    """``pool_recycle`` measures idle time: a connection in steady use is kept past it."""
    async with opened(new_gateway(with_options("pool_recycle=1"))) as gateway:
        first = await connection_id(gateway)
        for _ in range(6):  # 2.4 s in all, well past pool_recycle, never idle for 1 s
            await asyncio.sleep(0.4)
            assert await connection_id(gateway) == first
        await asyncio.sleep(1.5)  # idle past pool_recycle: replaced
        assert await connection_id(gateway) != first


async def test_no_statement_runs_past_its_deadline_and_its_connection_is_not_reused() -> None:
    async with opened(new_gateway(timeout=0.3)) as gateway:
        used = await connection_id(gateway)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(SessionBackendError, match=r"did not answer within 0\.3s"):
            await gateway.execute("SELECT SLEEP(3)")
        assert loop.time() - began < 1.5
        assert gateway.pool_state().size == 0  # closed, not put back
        assert await connection_id(gateway) != used


async def test_a_link_statement_past_its_deadline_leaves_its_connection_unused() -> None:
    async with opened(new_gateway(timeout=0.3)) as gateway:
        async with gateway.connection() as link:
            used = await connection_id(link)
            with pytest.raises(SessionBackendError, match="did not answer"):
                await link.execute("SELECT SLEEP(3)")
            assert link.broken
        assert gateway.pool_state() == PoolState(0, 0, 0, 10, {})
        assert await connection_id(gateway) != used


async def test_extra_time_widens_a_link_statement_deadline() -> None:
    async with opened(new_gateway(timeout=0.3)) as gateway, gateway.connection() as link:
        _, rows = await link.execute("SELECT SLEEP(0.6)", extra_time=1.0)
        assert rows == ((0,),)


async def test_a_statement_does_not_ask_asyncio_for_the_running_loop(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 ``asyncio.get_running_loop()`` is a getpid() system call: the statement
    path every request takes uses the loop the gateway was opened on instead."""
    calls = 0
    real = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    for _ in range(3):
        await gateway.execute("SELECT 1")
    assert calls == 0


@pytest.mark.parametrize(
    ("cluster", "causal_reads", "sync_wait"),
    [(None, True, 0), (Cluster.GALERA, True, 1), (Cluster.GALERA, False, 0)],
    ids=["detected single server", "galera", "galera without causal reads"],
)
async def test_a_galera_connection_is_set_up_once_for_causal_reads(
    cluster: Cluster | None, causal_reads: bool, sync_wait: int
) -> None:
    gateway = new_gateway(with_options("pool_max=1"), cluster=cluster, causal_reads=causal_reads)
    async with opened(gateway):
        assert gateway.cluster is (cluster or Cluster.SINGLE)
        statements = StatementCounter(gateway)
        for _ in range(5):
            await gateway.execute("SELECT 1")
        # Its one connection was set up with its first statement, not with every one.
        delta = statements.delta()
        assert delta["select"] == 5 and sum(delta.values()) == 5 + sync_wait, delta
        _, rows = await gateway.execute("SELECT @@wsrep_sync_wait")
        assert int(rows[0][0]) == sync_wait
