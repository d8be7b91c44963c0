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

from asgi_mysql_session import MySQLSessionProvider, SessionLockTimeout

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
            assert provider.pool_state().in_use == 0, "a made-up id holds a connection"
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
        await until(lambda: provider.pool_state().in_use == 5)
        http.cookies.set("session", user)
        for _ in range(3):
            read = await http.get("/read")
            assert (read.status_code, read.json()) == (200, {"user": "ada"})
        # The rest waited for a lock connection and were told to retry, not hung.
        answers = [await asyncio.wait_for(r.read(200), 5) for r in readers[5:]]
        assert all(a.startswith(b"HTTP/1.1 409") for a in answers), answers
        assert provider.pool_state().in_use == 5


async def locks_held_at_once(provider: MySQLSessionProvider, sessions: int) -> int:
    """How many of ``sessions`` live sessions hold their lock at once when all of them ask
    (the others give up waiting for a lock connection after their timeout)."""
    sids = [await make_session(provider, n=i) for i in range(sessions)]
    done = asyncio.Event()
    held: list[str] = []

    async def hold(sid: str) -> None:
        async with provider.session_lock(sid, 0.5) as locked:
            assert locked
            held.append(sid)
            await done.wait()

    tasks = [asyncio.ensure_future(hold(sid)) for sid in sids]
    try:
        await until(lambda: len(held) + sum(task.done() for task in tasks) == sessions)
        assert provider.pool_state().in_use == len(held)  # each holder on a connection of its own
        return len(held)
    finally:
        done.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is None or isinstance(r, SessionLockTimeout) for r in results), results
        assert sum(isinstance(r, SessionLockTimeout) for r in results) == sessions - len(held)


async def test_the_lock_cap_is_half_the_pool_or_what_is_configured(table: str, clock: FakeClock) -> None:
    async with MySQLSessionProvider(
        f"{MYSQL_URL}?pool_max=4", table=table, create_table=True, clock=clock, gc_interval=None
    ) as provider:
        assert await locks_held_at_once(provider, 4) == 2
    async with MySQLSessionProvider(
        MYSQL_URL, table=table, clock=clock, gc_interval=None, lock_connections=3
    ) as provider:
        assert await locks_held_at_once(provider, 5) == 3
