"""The middleware while the database misbehaves: 503 in bounded time, untouched routes unaffected,
recovery without a restart, and no acknowledged write lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import MYSQL_URL, assert_no_connection_checked_out
from faultproxy import FaultProxy
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider
from asgi_mysql_session.dsn import parse_dsn

TARGET = MYSQL_URL.split("@", 1)[1].split("/", 1)[0]
DATABASE = parse_dsn(MYSQL_URL).database
BOUND = 10.0  # a hang fails the test instead of blocking it; not a timing assertion


async def bounded(aw: Any) -> Any:
    return await asyncio.wait_for(aw, BOUND)


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    host, _, port = TARGET.partition(":")
    async with FaultProxy(host, int(port or 3306)) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def proxied(proxy: FaultProxy, table: str) -> AsyncIterator[MySQLSessionProvider]:
    dsn = f"mysql://root@127.0.0.1:{proxy.port}/{DATABASE}?connect_timeout=1&timeout=1&pool_max=4"
    provider = MySQLSessionProvider(dsn, table=table, create_table=True, gc_interval=None)
    await bounded(provider.open())
    yield provider
    proxy.heal()
    assert_no_connection_checked_out(provider)
    await bounded(provider.close())


async def login(http: httpx.AsyncClient) -> dict[str, str]:
    response = await bounded(http.get("/set", params={"user": "ada"}))
    http.cookies.clear()
    return {"cookie": f"session={response.cookies['session']}"}


@pytest.mark.parametrize("fault", ["blackhole", "refuse", "stall"])
async def test_routes_needing_the_session_get_503_and_others_are_unaffected(
    proxied: MySQLSessionProvider, proxy: FaultProxy, fault: str
) -> None:
    async with client(make_app(proxied, lazy=True)) as http:
        cookie = await login(http)
        proxy.drop_all()
        {"blackhole": proxy.blackhole, "refuse": proxy.refuse, "stall": proxy.stall_reads}[fault](True)
        needing = await bounded(http.get("/lazy", headers=cookie))
        assert needing.status_code == 503
        assert needing.text == "Session storage is unavailable, please retry."
        assert "set-cookie" not in needing.headers
        untouched = await bounded(http.get("/noop", headers=cookie))
        assert untouched.status_code == 200 and untouched.text == "ok"
        creating = await bounded(http.get("/set", params={"a": "1"}))
        assert creating.status_code == 503


async def test_eager_mode_serves_untouched_routes_while_the_database_is_down(
    proxied: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    async with client(make_app(proxied)) as http:
        cookie = await login(http)
        proxy.drop_all()
        proxy.refuse(True)
        assert (await bounded(http.get("/noop", headers=cookie))).status_code == 200
        assert (await bounded(http.get("/read", headers=cookie))).status_code == 503


async def test_the_app_recovers_by_itself_and_keeps_acknowledged_writes(
    proxied: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    async with client(make_app(proxied)) as http:
        cookie = await login(http)
        acknowledged = 0
        for _ in range(3):
            response = await bounded(http.get("/incr", headers=cookie))
            assert response.status_code == 200
            acknowledged = response.json()["n"]
        proxy.drop_all()  # every pooled connection dies under the app
        proxy.refuse(True)
        assert (await bounded(http.get("/incr", headers=cookie))).status_code == 503
        proxy.heal()
        response = await bounded(http.get("/incr", headers=cookie))
        assert response.status_code == 200, response.text
        assert response.json() == {"n": acknowledged + 1}
        assert (await bounded(http.get("/read", headers=cookie))).json() == {"user": "ada", "n": 4}


async def test_a_write_cut_mid_statement_is_not_acknowledged(
    proxied: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    async with client(make_app(proxied)) as http:
        cookie = await login(http)
        proxy.on_request(b"UPDATE", lambda: proxy.stall_reads(True))
        response = await bounded(http.get("/incr", headers=cookie))
        assert response.status_code == 503
        proxy.heal()
        stored = (await bounded(http.get("/read", headers=cookie))).json()
    # The UPDATE may or may not have committed; what the client was told is not contradicted:
    # it was told nothing about n, and the session is intact.
    assert stored["user"] == "ada" and stored.get("n", 1) == 1
