"""The provider follows the event loop: requests on new loops, loops that end, and trio."""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import Iterator

import pytest
from conftest import MYSQL_URL, Database, StatementCounter

from asgi_mysql_session import MySQLSessionProvider, SessionConfigError, SessionMiddleware
from asgi_mysql_session.loops import async_library, require_asyncio

with warnings.catch_warnings():
    # Starlette >= 1.10 deprecates its TestClient on httpx (it wants httpx2) when the module
    # is imported; warnings are errors in this suite, and this is the one we accept here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def incr(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse({"n": request.session["n"]})


async def view(request: Request) -> JSONResponse:
    return JSONResponse({"session": request.session})


@pytest.fixture
def sync_table(db: Database) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    db.query(f"DROP TABLE IF EXISTS `{name}`")


def session_app(provider: MySQLSessionProvider) -> Starlette:
    app = Starlette(routes=[Route("/incr", incr), Route("/view", view)])
    app.add_middleware(SessionMiddleware, provider=provider)
    return app


def test_testclient_without_with_runs_each_request_on_a_new_loop(sync_table: str, db: Database) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table, create_table=True)  # sweeper on
    client = TestClient(session_app(provider))  # no `with`: every request gets its own loop
    for n in range(1, 6):
        assert client.get("/incr").json() == {"n": n}
    assert client.get("/view").json() == {"session": {"n": 5}}
    # Each loop's shutdown closed the provider with it: nothing is open, nothing leaked.
    assert not provider.is_open and provider.pool_state().size == 0
    gc.collect()  # a leaked aiomysql connection would warn now (warnings are errors)
    [(count,)] = db.query(f"SELECT COUNT(*) FROM `{sync_table}`")
    assert count == 1


def test_testclient_with_lifespan_keeps_one_provider_open(sync_table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table, create_table=True, gc_interval=None)
    with TestClient(session_app(provider)) as client:
        assert client.get("/incr").json() == {"n": 1}
        state, statements = provider.pool_state(), StatementCounter(provider)
        assert client.get("/incr").json() == {"n": 2}
        # The same pool, not a reopened one: no connection opened, no open-time check run
        # (the request's own read and write are all it sent).
        assert provider.is_open and provider.pool_state() == state
        assert statements.delta() == {"select": 1, "update": 1}
    assert not provider.is_open


def test_asyncio_run_twice_with_one_provider(sync_table: str) -> None:
    """As pytest-asyncio's function-scoped loops do: the provider reopens on each loop."""
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table, create_table=True)

    async def use() -> None:
        await provider.open()
        store = await provider.read(provider.new_session_id())
        store["a"] = 1
        await store.release()

    asyncio.run(use())
    assert not provider.is_open
    asyncio.run(use())
    assert asyncio.run(provider_all(provider)) == 2
    gc.collect()


async def provider_all(provider: MySQLSessionProvider) -> int:
    await provider.open()
    return await provider.all()


def test_a_loop_closed_without_cancelling_tasks_is_abandoned_cleanly(sync_table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table, create_table=True, gc_interval=None)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(provider.open())
    loop.close()  # no shutdown: the guard task never ran, the connections are still open
    assert provider.is_open

    async def use() -> bool:
        return await provider.exist(provider.new_session_id())  # reopens on this loop

    assert asyncio.run(use()) is False  # no "Event loop is closed", no unclosed transport
    gc.collect()


async def test_a_provider_open_on_a_live_loop_is_refused_elsewhere(sync_table: str) -> None:
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table, create_table=True, gc_interval=None)
    await provider.open()
    try:

        def other_loop() -> None:
            async def use() -> None:
                await provider.exist(provider.new_session_id())

            with pytest.raises(Exception, match="another event loop that is still open"):
                asyncio.run(use())

        await asyncio.to_thread(other_loop)
    finally:
        await provider.close()


# -- trio ------------------------------------------------------------------------------


async def test_under_asyncio_the_library_is_asyncio() -> None:
    assert async_library() == "asyncio"
    assert require_asyncio() is asyncio.get_running_loop()


def test_outside_any_loop_the_error_says_so() -> None:
    assert async_library() is None
    with pytest.raises(SessionConfigError, match="aiomysql, runs only on asyncio"):
        require_asyncio()


def test_under_trio_open_names_the_reason(sync_table: str) -> None:
    trio = pytest.importorskip("trio")
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table)

    async def main() -> None:
        assert async_library() == "trio"
        with pytest.raises(SessionConfigError, match="runs under trio"):
            await provider.open()

    trio.run(main)


def test_under_trio_the_lifespan_fails_at_startup(sync_table: str) -> None:
    pytest.importorskip("trio")
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table)
    client = TestClient(session_app(provider), backend="trio")
    with pytest.raises(SessionConfigError, match="aiomysql, runs only on asyncio"), client:
        pass


def test_under_trio_a_request_names_the_reason(sync_table: str) -> None:
    pytest.importorskip("trio")
    provider = MySQLSessionProvider(MYSQL_URL, table=sync_table)
    client = TestClient(session_app(provider), backend="trio")
    with pytest.raises(SessionConfigError, match="runs under trio"):
        client.get("/incr")
