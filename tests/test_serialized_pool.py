"""Serialized mode cannot be used to exhaust the pool (under a real uvicorn, slow clients).

A made-up id holds no connection past the one statement that finds it is not live, and
holders of live sessions' locks share at most half the pool, so ordinary requests of the
worker keep being served.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import MYSQL_URL, FakeClock, assert_no_connection_checked_out, make_session
from liveserver import serving
from sessionapp import make_app
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgi_mysql_session import MySQLSessionProvider

ATTACKERS = 12  # more than the default pool of 10


async def upload(request: Request) -> Response:
    body = await request.body()
    request.session["bytes"] = len(body)
    return JSONResponse({"bytes": len(body)})


def serialized_app(provider: MySQLSessionProvider) -> object:
    app = make_app(provider, serialize=["/ser"], lock_timeout=1.0)
    app.add_route("/ser", upload, methods=["POST"])
    return app


@asynccontextmanager
async def trickling(url: str, cookies: list[str]) -> AsyncIterator[list[asyncio.StreamReader]]:
    """One socket per cookie: POST /ser announcing 1 MB, then one byte, then nothing."""
    where = urlsplit(url)
    async with AsyncExitStack() as stack:
        readers = []
        for cookie in cookies:
            reader, writer = await asyncio.open_connection(where.hostname, where.port)
            stack.push_async_callback(writer.wait_closed)
            stack.callback(writer.close)
            writer.write(
                f"POST /ser HTTP/1.1\r\nHost: x\r\nCookie: session={cookie}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nx".encode()
            )
            await writer.drain()
            readers.append(reader)
        yield readers


async def until(condition: object, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polls counters
            await asyncio.sleep(0.02)


@pytest.fixture
async def provider(table: str, clock: FakeClock) -> AsyncIterator[MySQLSessionProvider]:
    """The default pool of 10, and a short timeout: a starved pool would answer 503 quickly."""
    async with MySQLSessionProvider(
        MYSQL_URL,
        table=table,
        create_table=True,
        clock=clock,
        gc_interval=None,
        timeout=1.0,
        coalesce_reads=False,  # reads one by one: the waits below count one SELECT per read
    ) as provider:
        yield provider
        assert_no_connection_checked_out(provider)


async def test_made_up_ids_on_a_serialized_path_never_starve_other_sessions(
    provider: MySQLSessionProvider,
) -> None:
    user = await make_session(provider, user="ada")
    selects = provider.statements["select"]
    async with serving(serialized_app(provider)) as url:
        made_up = [secrets.token_urlsafe(32) for _ in range(ATTACKERS)]
        async with trickling(url, made_up), httpx.AsyncClient(base_url=url) as http:
            # Each made-up id: one statement that finds it is not live, then the usual read.
            await until(lambda: provider.statements["select"] >= selects + 2 * ATTACKERS)
            assert provider._pool._used == set(), "a made-up id holds a connection"  # type: ignore[union-attr]
            http.cookies.set("session", user)
            read = await http.get("/read")
            assert (read.status_code, read.json()) == (200, {"user": "ada"})
            served = await http.post("/ser", content=b"12345")
            assert (served.status_code, served.json()) == (200, {"bytes": 5})


async def test_lock_holders_never_take_the_connections_ordinary_requests_need(
    provider: MySQLSessionProvider,
) -> None:
    user = await make_session(provider, user="ada")
    live = [await make_session(provider, user=f"mallory{i}") for i in range(ATTACKERS)]
    async with (
        serving(serialized_app(provider)) as url,
        trickling(url, live) as readers,
        httpx.AsyncClient(base_url=url) as http,
    ):
        pool = provider._pool
        await until(lambda: len(pool._used) == 5)  # type: ignore[union-attr]
        http.cookies.set("session", user)
        for _ in range(3):
            read = await http.get("/read")
            assert (read.status_code, read.json()) == (200, {"user": "ada"})
        # The rest waited for a lock connection and were told to retry, not hung.
        answers = [await asyncio.wait_for(r.read(200), 5) for r in readers[5:]]
        assert all(a.startswith(b"HTTP/1.1 409") for a in answers), answers
        assert len(pool._used) == 5  # type: ignore[union-attr]


async def test_the_lock_cap_is_half_the_pool_or_what_is_configured(table: str) -> None:
    provider = MySQLSessionProvider(f"{MYSQL_URL}?pool_max=4", table=table, gc_interval=None)
    assert provider._lock_semaphore()._value == 2
    provider = MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None, lock_connections=3)
    assert provider._lock_semaphore()._value == 3
