"""Defects found by a security review and a black-box suite, each pinned by a test.

Issue 12: a dropped table is a 503; lowered lifetimes take effect at read time; clear()
ends the id whatever is set next; responses issuing an id are never shared-cacheable; the
provider refuses malformed ids; anonymous sessions are counted.
"""

from __future__ import annotations

import asyncio
import logging
from http.cookies import SimpleCookie

import httpx
import pytest
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, key_of, make_session, row_count
from liveserver import serving
from prometheus_client import CollectorRegistry
from sessionapp import client, make_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_mysql_session import (
    InvalidSessionId,
    MySQLSessionProvider,
    PrometheusObserver,
    SaveResult,
    SessionBackendError,
    SessionMiddleware,
    SessionSchemaError,
    is_valid_session_id,
)
from asgi_mysql_session.cli import main
from asgi_mysql_session.dsn import parse_dsn

LOGGER = "asgi_mysql_session"


def cookie_of(response: httpx.Response, name: str = "session") -> str | None:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar[name].value if name in jar else None


def opened(table: str, clock: FakeClock, **options: object) -> MySQLSessionProvider:
    return MySQLSessionProvider(MYSQL_URL, table=table, clock=clock, gc_interval=None, **options)  # type: ignore[arg-type]


# -- a missing table is a clean 503 ----------------------------------------------------------


def test_a_schema_error_is_a_backend_error() -> None:
    assert issubclass(SessionSchemaError, SessionBackendError)


async def test_a_dropped_table_gives_the_configured_503_under_uvicorn_logged_once_with_its_cause(
    provider: MySQLSessionProvider, db: Database, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(provider, error_status=503, error_body=b"sessions are down")
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        sid = cookie_of(await http.get("/set", params={"user": "ada"}))
        assert sid is not None
        db.query(f"DROP TABLE `{table}`")  # a failed migration, a wrong table=
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            read = await http.get("/read")
            async with httpx.AsyncClient(base_url=url) as stranger:
                fresh = await stranger.get("/set", params={"a": "1"})
            untouched = await http.get("/noop")
    assert (read.status_code, read.text) == (503, "sessions are down")
    assert (fresh.status_code, fresh.text) == (503, "sessions are down")
    assert untouched.status_code == 200
    failures = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(failures) == 3  # one line per request that met it (/noop read it eagerly), no more
    assert all("create_table=True" in r.getMessage() for r in failures)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an operational failure"
    db.query(f"CREATE TABLE IF NOT EXISTS `{table}` (x INT)")  # so the fixture's checks still run


async def test_the_library_names_its_own_remedy_and_the_cli_names_init(
    table: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SessionSchemaError) as library:
        await opened(table, clock).open()
    assert "create_table=True" in str(library.value) and "init --print-sql" in str(library.value)
    assert "schema.sql" not in str(library.value)
    assert await asyncio.to_thread(main, ["--dsn", MYSQL_URL, "--table", table, "stats"]) == 1
    said = capsys.readouterr().err
    assert f"asgi-mysql-session init --table {table}" in said
    assert "create_table" not in said and "schema.sql" not in said


# -- lowering a lifetime takes effect --------------------------------------------------------


async def test_lowering_absolute_lifetime_ends_old_sessions_at_their_next_read(
    table: str, clock: FakeClock, db: Database
) -> None:
    async with opened(table, clock, create_table=True, absolute_lifetime=86400) as before:
        sid = await make_session(before, user="ada")
    clock.advance(7200)
    async with opened(table, clock, absolute_lifetime=3600, max_lifetime=600) as after:
        assert not await after.exist(sid)
        assert (await after.load(sid)).is_new
        assert await after.all() == 0
        assert await after.sessions_of("ada") == []
    assert row_count(db, table) == 1  # not written: the sweep or `gc --absolute-lifetime` removes it


async def test_lowering_max_lifetime_brings_the_stored_deadline_down_at_the_next_request(
    table: str, clock: FakeClock, db: Database
) -> None:
    async with opened(table, clock, create_table=True, max_lifetime=86400) as before:
        sid = await make_session(before, user="ada")
    async with opened(table, clock, max_lifetime=600) as after:
        counter = StatementCounter(after)
        store = await after.load(sid)
        assert dict(store) == {"user": "ada"}
        assert await store.release() is SaveResult.TOUCHED
        assert counter.delta() == {"select": 1, "update": 1}
        assert store.expiry == clock.now + 600
        [(expiry,)] = db.query(f"SELECT session_expiry FROM `{table}` WHERE session_key = %s", (key_of(sid),))
        assert expiry == clock.now + 600
        clock.advance(601)
        assert not await after.exist(sid)


async def test_an_absolute_lifetime_below_the_idle_one_wins(table: str, clock: FakeClock) -> None:
    async with opened(table, clock, create_table=True, max_lifetime=3600, absolute_lifetime=600) as provider:
        sid = await make_session(provider, user="ada")
        store = await provider.load(sid)
        assert store.expiry == clock.now + 600
        clock.advance(599)
        store = await provider.load(sid)
        store["n"] = 1
        await store.release()
        assert store.expiry == clock.now + 1  # the absolute bound, not now + 3600
        clock.advance(1)
        assert not await provider.exist(sid)


async def test_gc_can_apply_a_lowered_policy_to_the_whole_table(
    table: str, clock: FakeClock, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    real = FakeClock(__import__("time").time())
    month = 30 * 86400
    async with opened(table, real, create_table=True, max_lifetime=month, absolute_lifetime=month) as p:
        young = await make_session(p, user="young")
        real.advance(-5 * 86400)  # created five days ago, still within the old policy
        old = await make_session(p, user="old")
        real.advance(5 * 86400)
    code = await asyncio.to_thread(
        main,
        ["--dsn", MYSQL_URL, "--table", table, "gc", "--max-lifetime", "600", "--absolute-lifetime", "86400"],
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "applied max lifetime 600s, absolute lifetime 86400s: 2 live sessions" in out
    [(expiry,)] = db.query(f"SELECT session_expiry FROM `{table}` WHERE session_key = %s", (key_of(young),))
    assert int(str(expiry)) <= real.now + 601
    assert db.query(f"SELECT 1 FROM `{table}` WHERE session_key = %s", (key_of(old),)) == []
    assert "deleted 1 expired rows" in out


# -- logout that leaves a message behind gets a new id ---------------------------------------


async def flash_logout(request: Request) -> Response:
    request.session.clear()
    request.session["flash"] = "you are logged out"
    return PlainTextResponse("bye")


async def test_clear_then_set_kills_the_old_id_and_starts_a_new_one(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    app = make_app(provider)
    app.add_route("/flash-logout", flash_logout)
    async with client(app) as http:
        old = cookie_of(await http.get("/set", params={"user": "ada"}))
        response = await http.get("/flash-logout")
        new = cookie_of(response)
        assert new is not None and new != old
        assert (await http.get("/read")).json() == {"flash": "you are logged out"}
    async with client(app) as replay:
        replay.cookies.set("session", str(old))
        assert (await replay.get("/read")).json() == {}
    assert db.query(f"SELECT 1 FROM `{table}` WHERE session_key = %s", (key_of(str(old)),)) == []
    assert row_count(db, table) == 1


async def test_clear_then_set_costs_a_delete_and_an_insert(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.load(sid)
    store.clear()
    store["flash"] = "bye"
    statements.start()
    assert await store.release() is SaveResult.CREATED
    assert statements.delta() == {"delete": 1, "insert": 1}
    assert store.session_id != sid and not await provider.exist(sid)


# -- a response issuing an id is never shared-cacheable --------------------------------------


def cache_app(provider: MySQLSessionProvider, headers: dict[str, str]) -> Starlette:
    async def login(request: Request) -> Response:
        request.session["user"] = "ada"
        return PlainTextResponse("ok", headers=headers)

    async def public(request: Request) -> Response:
        return PlainTextResponse(str(request.session.get("user")), headers=headers)

    app = Starlette(routes=[Route("/login", login), Route("/public", public)])
    app.add_middleware(SessionMiddleware, provider=provider)
    return app


@pytest.mark.parametrize(
    "headers",
    [
        {"cache-control": "public, max-age=3600"},
        {"Cache-Control": "max-age=60, s-maxage=600"},
        {"cache-control": "private", "cdn-cache-control": "max-age=600"},
        {"surrogate-control": "max-age=600"},
    ],
)
async def test_an_app_cache_policy_never_makes_a_new_id_shareable(
    provider: MySQLSessionProvider, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with client(cache_app(provider, headers)) as http:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            first = await http.get("/login")
            http.cookies.clear()
            await http.get("/login")
    assert cookie_of(first) is not None
    assert first.headers.get_list("cache-control") == ["no-store"]
    assert "cdn-cache-control" not in first.headers and "surrogate-control" not in first.headers
    assert len([r for r in caplog.records if "replaced with Cache-Control: no-store" in r.getMessage()]) == 1


async def test_the_expiring_cookie_of_an_unknown_id_is_not_shareable_either(
    provider: MySQLSessionProvider,
) -> None:
    async with client(cache_app(provider, {"cache-control": "public, max-age=3600"})) as http:
        http.cookies.set("session", provider.new_session_id())
        response = await http.get("/public")
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert response.headers.get_list("cache-control") == ["no-store"]


async def test_a_response_without_a_cookie_keeps_the_app_policy(provider: MySQLSessionProvider) -> None:
    async with client(cache_app(provider, {"cache-control": "public, max-age=3600"})) as http:
        response = await http.get("/public")
    assert "set-cookie" not in response.headers
    assert response.headers.get_list("cache-control") == ["public, max-age=3600"]


# -- the provider API is as strict as the middleware -----------------------------------------


@pytest.mark.parametrize("sid", ["x;y", "short", "a" * 129, "has space in it 123", "é" * 20, ""])
async def test_the_provider_refuses_malformed_ids_and_writes_nothing(
    provider: MySQLSessionProvider, db: Database, table: str, sid: str
) -> None:
    for call in (provider.read, provider.exist, provider.destroy):
        with pytest.raises(InvalidSessionId, match="not a well-formed session id") as refused:
            await call(sid)
        assert isinstance(refused.value, ValueError)
    with pytest.raises(InvalidSessionId):
        await provider.regenerate(sid, provider.new_session_id())
    assert not is_valid_session_id(sid)
    assert row_count(db, table) == 0


async def test_load_never_adopts_an_id_from_a_client(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    for presented in ("x;y", provider.new_session_id(), None):
        store = await provider.load(presented)
        assert store.is_new and dict(store) == {}
        store["user"] = "mallory"
        assert await store.release() is SaveResult.CREATED
        assert store.session_id != presented and is_valid_session_id(store.session_id)
    assert row_count(db, table) == 3


async def test_load_opens_a_live_session_in_one_select(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = await make_session(provider, user="ada")
    statements.start()
    store = await provider.load(sid)
    assert statements.delta() == {"select": 1}
    assert store.session_id == sid and dict(store) == {"user": "ada"}


# -- anonymous sessions are counted ----------------------------------------------------------


async def test_anonymous_and_owned_creations_are_counted_apart(table: str, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    async with opened(table, clock, create_table=True, observer=observer) as provider:
        await make_session(provider, cart=[1])
        await make_session(provider, cart=[2])
        await make_session(provider, owner="ada", user="ada")

    def created(anonymous: str) -> float | None:
        return registry.get_sample_value(
            "asgi_mysql_session_sessions_created_total", {"anonymous": anonymous}
        )

    assert (created("true"), created("false")) == (2.0, 1.0)


# -- a read-only server (a replica) is a clear error at the first write ----------------------


async def test_a_read_only_server_refuses_the_first_write_clearly_and_nothing_is_lost(
    provider: MySQLSessionProvider, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    import aiomysql

    kwargs = MySQLSessionProvider.connect_kwargs()
    kwargs["init_command"] += ", SESSION tx_read_only = 1"  # what writes to a replica meet
    target = parse_dsn(MYSQL_URL)
    pool = await aiomysql.create_pool(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        db=target.database,
        minsize=1,
        maxsize=2,
        **kwargs,
    )
    try:
        replica = MySQLSessionProvider(pool=pool, table=table, gc_interval=None)
        await replica.open()
        sid = await make_session(provider, user="ada")
        assert dict(await replica.load(sid)) == {"user": "ada"}  # reads work
        app = make_app(replica)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with client(app) as http:
                response = await http.get("/set", params={"a": "1"})
        assert response.status_code == 503
        assert any("read-only" in r.getMessage() and "primary" in r.getMessage() for r in caplog.records)
        assert dict(await provider.load(sid)) == {"user": "ada"}
        await replica.close()
    finally:
        pool.close()
        await pool.wait_closed()


async def test_another_control_header_is_kept_and_no_override_is_logged(
    provider: MySQLSessionProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async with client(cache_app(provider, {"x-frame-control": "deny"})) as http:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            response = await http.get("/login")
    assert response.headers["x-frame-control"] == "deny"
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert not [r for r in caplog.records if "replaced" in r.getMessage()]
