"""A late response about an id that a login rotated away leaves the client's cookie alone.

Browsers apply Set-Cookie in the order responses arrive: a slow request sent with the
pre-login id must not expire the fresh login cookie when it finishes. A rotation leaves a
tombstone under the old id for ``rotation_grace`` seconds, so "superseded" is told apart
from "unknown" in the same one SELECT, and the old id still opens nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, make_session, row_count
from liveserver import serving
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider, SaveResult


class Held:
    """ASGI wrapper: requests to ``path`` wait for ``gate`` before the session is even read,
    like a request the client sent before the login that the server reaches after it."""

    def __init__(self, app: Any, path: str) -> None:
        self.app, self.path = app, path
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            self.arrived.set()
            await self.gate.wait()
        await self.app(scope, receive, send)


async def test_slow_requests_of_the_old_id_finishing_after_login_keep_the_new_cookie(
    provider: MySQLSessionProvider,
) -> None:
    app = make_app(provider)
    held = Held(app, "/read")
    async with serving(held) as url, httpx.AsyncClient(base_url=url) as jar:
        await jar.get("/set", params={"cart": "1"})
        old = jar.cookies["session"]
        slow_write = asyncio.create_task(jar.get("/slow-incr"))  # read the old session, writes later
        late_read = asyncio.create_task(jar.get("/read"))  # reads only after the login
        await app.state.entered.wait()
        await held.arrived.wait()
        login = await jar.get("/login", params={"user": "ada"})
        new = jar.cookies["session"]
        assert login.status_code == 200 and new != old

        held.gate.set()
        read = await late_read
        app.state.gate.set()
        write = await slow_write

        assert read.status_code == 200 and read.json() == {}
        assert "set-cookie" not in read.headers
        assert write.status_code == 409 and "set-cookie" not in write.headers
        assert jar.cookies["session"] == new
        assert (await jar.get("/read")).json() == {"cart": "1", "user": "ada"}
    async with client(app) as stranger:
        stranger.cookies.set("session", old)
        assert (await stranger.get("/read")).json() == {}


async def test_a_superseded_id_is_told_apart_in_the_same_single_select(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.load(sid)
    await store.regenerate()
    statements.start()
    late = await provider.load(sid)
    assert statements.delta() == {"select": 1}
    assert late.superseded and late.is_new and dict(late) == {}


async def rotated_away(app: Any) -> str:
    """The id a client held before it logged in (the login rotated it)."""
    async with client(app) as http:
        await http.get("/set", params={"a": "1"})
        old = http.cookies["session"]
        await http.get("/login")
    return old


async def test_a_superseded_id_never_saves_anything(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    app = make_app(provider)
    old = await rotated_away(app)
    async with client(app) as late:
        late.cookies.set("session", old)
        response = await late.get("/set", params={"b": "2"})
    assert response.status_code == 409 and "set-cookie" not in response.headers
    assert row_count(db, table) == 1


async def test_without_a_grace_rotation_is_one_update_and_leaves_nothing(
    table: str, clock: FakeClock, db: Database
) -> None:
    async with MySQLSessionProvider(
        MYSQL_URL, table=table, create_table=True, clock=clock, gc_interval=None, rotation_grace=0
    ) as provider:
        sid = await make_session(provider, user="ada")
        store = await provider.load(sid)
        counter = StatementCounter(provider)
        await store.regenerate()
        assert counter.delta() == {"update": 1}
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(1,)]


async def test_after_the_grace_the_old_id_is_unknown_and_its_cookie_expired(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    app = make_app(provider)
    old = await rotated_away(app)
    clock.advance(provider.rotation_grace)
    async with client(app) as late:
        late.cookies.set("session", old)
        response = await late.get("/read")
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert await provider.gc() == 1  # the tombstone is swept like any expired row
    assert row_count(db, table) == 1


async def test_tombstones_are_not_sessions(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, owner="ada", user="ada")
    store = await provider.load(sid)
    await store.regenerate()
    assert await provider.all() == 1
    assert len(await provider.sessions_of("ada")) == 1
    assert not await provider.exist(sid)
    assert (await provider.read(store.session_id)).get("user") == "ada"
    assert await store.release() is SaveResult.NOTHING
