"""Concurrent requests of one session through the middleware: nothing lost, opt-in serialization."""

from __future__ import annotations

import asyncio

import httpx
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider


async def new_session(http: httpx.AsyncClient, **values: str) -> dict[str, str]:
    """A fresh session; the client's jar is left empty so each request names its cookie."""
    http.cookies.clear()
    response = await http.get("/set", params=values)
    http.cookies.clear()
    return {"cookie": f"session={response.cookies['session']}"}


async def test_50_concurrent_requests_setting_their_own_keys_20_times_lose_nothing(
    provider: MySQLSessionProvider,
) -> None:
    async with client(make_app(provider)) as http:
        cookie = await new_session(http, seed="kept")

        async def user(i: int) -> None:
            for round_ in range(20):
                response = await http.get("/set", params={f"k{i}": str(round_)}, headers=cookie)
                assert response.status_code == 200

        await asyncio.gather(*(user(i) for i in range(50)))
        final = (await http.get("/read", headers=cookie)).json()
    assert final == {"seed": "kept", **{f"k{i}": "19" for i in range(50)}}


async def test_a_concurrent_delete_and_set_of_different_keys_both_survive(
    provider: MySQLSessionProvider,
) -> None:
    app = make_app(provider)
    async with client(app) as http:
        cookie = await new_session(http, doomed="x", kept="y")
        # Both requests read the session before either writes.
        slow = asyncio.create_task(http.get("/slow-incr", headers=cookie))
        await asyncio.wait_for(app.state.entered.wait(), 10)
        store = await provider.read(cookie["cookie"].split("=", 1)[1])
        del store["doomed"]
        await store.release()
        app.state.gate.set()
        assert (await asyncio.wait_for(slow, 10)).status_code == 200
        final = (await http.get("/read", headers=cookie)).json()
    assert final == {"kept": "y", "n": 1}


async def test_serialized_mode_counts_50_concurrent_increments_exactly(
    provider: MySQLSessionProvider,
) -> None:
    async with client(make_app(provider, serialize=["/incr"])) as http:
        cookie = await new_session(http, user="ada")
        responses = await asyncio.gather(*(http.get("/incr", headers=cookie) for _ in range(50)))
        assert all(r.status_code == 200 for r in responses)
        assert sorted(r.json()["n"] for r in responses) == list(range(1, 51))
        assert (await http.get("/read", headers=cookie)).json() == {"user": "ada", "n": 50}


async def test_serialized_mode_never_blocks_other_sessions(provider: MySQLSessionProvider) -> None:
    app = make_app(provider, serialize=True)
    async with client(app) as http:
        ada = await new_session(http, user="ada")
        bob = await new_session(http, user="bob")
        held = asyncio.create_task(http.get("/slow-incr", headers=ada))  # holds ada's lock
        await asyncio.wait_for(app.state.entered.wait(), 10)
        other = await asyncio.wait_for(http.get("/incr", headers=bob), 10)
        assert other.json() == {"n": 1}
        assert not held.done()
        app.state.gate.set()
        assert (await asyncio.wait_for(held, 10)).json() == {"n": 1}


async def test_serialized_mode_answers_409_when_the_lock_is_not_had_in_time(
    provider: MySQLSessionProvider, db: Database
) -> None:
    async with client(make_app(provider, serialize=True, lock_timeout=0.2)) as http:
        cookie = await new_session(http, user="ada")
        sid = cookie["cookie"].split("=", 1)[1]
        store = await provider.read(sid)
        name = f"asgi_mysql_session:{store.key_hash[:40]}"
        db.query("SELECT GET_LOCK(%s, 0)", (name,))  # another worker holds this session
        try:
            busy = await asyncio.wait_for(http.get("/incr", headers=cookie), 10)
        finally:
            db.query("SELECT RELEASE_LOCK(%s)", (name,))
        assert busy.status_code == 409
        assert "busy" in busy.text
        assert (await http.get("/incr", headers=cookie)).json() == {"n": 1}


async def test_serialized_request_costs_two_lock_statements_more(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider, serialize=True)) as http:
        cookie = await new_session(http, user="ada")
        statements.start()
        await http.get("/incr", headers=cookie)
    assert statements.delta() == {"select": 3, "update": 1}  # GET_LOCK, read, RELEASE_LOCK


async def test_serialized_requests_use_the_lock_connection_so_a_small_pool_cannot_deadlock(
    table: str, clock: FakeClock
) -> None:
    small = MySQLSessionProvider(
        f"{MYSQL_URL}?pool_max=2&timeout=2", table=table, create_table=True, clock=clock, gc_interval=None
    )
    async with small, client(make_app(small, serialize=True)) as http:
        cookies = [await new_session(http, user=f"u{i}") for i in range(4)]
        responses = await asyncio.wait_for(
            asyncio.gather(*(http.get("/incr", headers=cookie) for cookie in cookies for _ in range(3))), 20
        )
    assert [r.status_code for r in responses] == [200] * 12
    assert sorted(r.json()["n"] for r in responses) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
