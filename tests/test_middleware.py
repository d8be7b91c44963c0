"""SessionMiddleware over HTTP: statement budget, cookies, strict ids, saving before headers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from asgitools import serve, websocket_connect
from conftest import MYSQL_URL, Database, FakeClock, StatementCounter, provider_on
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider, SessionConfigError, SessionMiddleware


def set_cookie(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


async def logged_in(http: httpx.AsyncClient) -> str:
    response = await http.get("/set", params={"user": "ada"})
    return set_cookie(response)["session"].value


# -- statement budget -------------------------------------------------------------------


async def test_no_cookie_and_untouched_session_costs_no_statement(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        statements.start()
        response = await http.get("/noop")
    assert response.status_code == 200
    assert statements.delta() == {}
    assert "set-cookie" not in response.headers


async def test_new_empty_session_is_never_written_and_sets_no_cookie(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        statements.start()
        response = await http.get("/read")
    assert response.json() == {}
    assert statements.delta() == {}
    assert "set-cookie" not in response.headers
    assert response.headers["vary"] == "Cookie"


async def test_creating_a_session_costs_one_insert_and_no_select(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        statements.start()
        response = await http.get("/set", params={"a": "1"})
    assert statements.delta() == {"insert": 1}
    assert "session" in set_cookie(response)


async def test_reading_a_session_costs_one_select(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        await logged_in(http)
        statements.start()
        response = await http.get("/read")
    assert response.json() == {"user": "ada"}
    assert statements.delta() == {"select": 1}
    assert "set-cookie" not in response.headers


async def test_cookie_present_but_route_untouched_still_reads_once_in_eager_mode(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        await logged_in(http)
        statements.start()
        response = await http.get("/noop")
    assert statements.delta() == {"select": 1}
    assert "vary" not in response.headers


async def test_modifying_a_session_costs_one_select_and_one_update(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        await logged_in(http)
        statements.start()
        response = await http.get("/incr")
    assert response.json() == {"n": 1}
    assert statements.delta() == {"select": 1, "update": 1}


async def test_excluded_paths_never_load_the_session(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider, exclude_paths=["/health"])) as http:
        await logged_in(http)
        statements.start()
        response = await http.get("/health")
    assert response.status_code == 200
    assert statements.delta() == {}


async def test_lazy_mode_reads_only_where_the_route_loads(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider, lazy=True)) as http:
        await logged_in(http)
        statements.start()
        await http.get("/noop")
        assert statements.delta() == {}
        response = await http.get("/lazy")
    assert response.json() == {"user": "ada"}
    assert statements.delta() == {"select": 1}


async def test_lazy_mode_access_before_load_is_a_clear_error(provider: MySQLSessionProvider) -> None:
    app = make_app(provider, lazy=True)
    async with client(app) as http:
        await logged_in(http)
        with pytest.raises(Exception, match="load_session"):
            await http.get("/read")


# -- logout, strict ids, rotation -------------------------------------------------------------


async def test_clearing_the_session_deletes_its_row_and_expires_the_cookie(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        statements.start()
        response = await http.get("/logout")
        assert statements.delta() == {"select": 1, "delete": 1}
        morsel = set_cookie(response)["session"]
        assert morsel.value == "" and morsel["max-age"] == "0"
        assert response.headers["cache-control"] == "no-store"
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]
    assert not await provider.exist(sid)


async def test_an_old_cookie_replayed_after_logout_is_anonymous(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        await http.get("/logout")
    async with client(make_app(provider)) as replay:
        response = await replay.get("/read", headers={"cookie": f"session={sid}"})
    assert response.json() == {}


async def test_unknown_ids_are_never_adopted(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    planted = provider.new_session_id()
    async with client(make_app(provider)) as http:
        response = await http.get("/read", headers={"cookie": f"session={planted}"})
        assert response.json() == {}
        # The dead cookie is cleared, and a write gets a fresh id.
        assert set_cookie(response)["session"]["max-age"] == "0"
        response = await http.get("/set", params={"a": "1"}, headers={"cookie": f"session={planted}"})
    issued = set_cookie(response)["session"].value
    assert issued != planted
    assert not await provider.exist(planted)
    keys = [row[0] for row in db.query(f"SELECT session_key FROM `{table}`")]
    assert keys == [hashlib.sha256(issued.encode()).hexdigest()]


async def test_expired_cookie_is_anonymous_even_before_a_sweep(
    provider: MySQLSessionProvider, clock: FakeClock
) -> None:
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        clock.advance(provider.max_lifetime)
        response = await http.get("/read", headers={"cookie": f"session={sid}"})
    assert response.json() == {}


async def test_login_rotates_the_id_and_the_old_one_dies_at_once(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider)) as http:
        before = await logged_in(http)
        response = await http.get("/login", params={"user": "bob"})
        after = set_cookie(response)["session"].value
        assert after != before
        assert (await http.get("/read")).json() == {"user": "bob"}
    assert not await provider.exist(before)
    assert dict(await provider.read(after)) == {"user": "bob"}


async def test_id_in_query_string_or_form_is_ignored(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        http.cookies.clear()
        by_query = await http.get("/read", params={"session": sid})
        by_form = await http.post("/read", data={"session": sid})
    assert by_query.json() == {}
    assert by_form.status_code == 405 or by_form.json() == {}


async def test_hostile_cookie_values_are_anonymous_and_cost_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    hostile = ["", "x" * 10_000, "' OR 1=1 --", "abc\x00def", "é" * 40, "a b", '"quoted"']
    async with client(make_app(provider)) as http:
        statements.start()
        for value in hostile:
            cookie = f"session={value}".encode()
            response = await http.get("/read", headers={"cookie": cookie})
            assert response.status_code == 200 and response.json() == {}
    assert statements.delta() == {}


async def test_first_well_formed_cookie_of_several_with_the_same_name_is_used(
    provider: MySQLSessionProvider,
) -> None:
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        http.cookies.clear()
        response = await http.get("/read", headers={"cookie": f"session=junk; session={sid}"})
    assert response.json() == {"user": "ada"}


# -- cookie attributes ----------------------------------------------------------------------


async def test_cookie_attributes_are_httponly_lax_path_root_and_max_age_follows_deadline(
    provider: MySQLSessionProvider,
) -> None:
    async with client(make_app(provider)) as http:
        response = await http.get("/set", params={"a": "1"})
    header = response.headers["set-cookie"]
    # Starlette's order and spelling
    sid = response.cookies["session"]
    assert header == f"session={sid}; path=/; Max-Age={provider.max_lifetime}; httponly; samesite=lax"
    assert set_cookie(response)["session"]["max-age"] == str(provider.max_lifetime)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Cookie"


async def test_secure_is_set_automatically_on_https(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider), base_url="https://testserver") as http:
        response = await http.get("/set", params={"a": "1"})
    assert response.headers["set-cookie"].endswith("; httponly; samesite=lax; secure")


async def test_host_prefixed_cookie_is_always_secure(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider, cookie_name="__Host-sid")) as http:
        response = await http.get("/set", params={"a": "1"})
    header = response.headers["set-cookie"]
    assert header.startswith("__Host-sid=") and header.endswith("; secure") and "domain" not in header


def test_host_prefix_with_a_domain_is_refused(provider: MySQLSessionProvider) -> None:
    with pytest.raises(SessionConfigError, match="__Host-"):
        SessionMiddleware(make_app(provider), provider, cookie_name="__Host-sid", domain="example.com")


async def test_browser_session_cookie_has_no_max_age_and_is_not_resent_on_writes(
    provider: MySQLSessionProvider,
) -> None:
    async with client(make_app(provider, max_age=None)) as http:
        response = await http.get("/set", params={"a": "1"})
        assert "Max-Age" not in response.headers["set-cookie"]
        assert "set-cookie" not in (await http.get("/incr")).headers


async def test_app_cache_control_is_kept(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider)) as http:
        response = await http.get("/cached")
    assert response.headers.get_list("cache-control") == ["private, max-age=5"]


async def test_app_cache_control_in_any_case_is_kept(provider: MySQLSessionProvider) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["session"]["user"] = "ada"
        headers = [(b"content-length", b"2"), (b"Cache-Control", b"private")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async with client(SessionMiddleware(app, provider=provider)) as http:  # type: ignore[arg-type]
        response = await http.get("/")
    assert "session=" in response.headers["set-cookie"]
    assert response.headers.get_list("cache-control") == ["private"]


# -- rolling expiry -----------------------------------------------------------------------------


async def test_rolling_expiry_touches_only_after_touch_after_and_refreshes_the_cookie(
    provider: MySQLSessionProvider, clock: FakeClock, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        await logged_in(http)
        clock.advance(provider.touch_after - 1)
        statements.start()
        response = await http.get("/read")
        assert statements.delta() == {"select": 1}
        assert "set-cookie" not in response.headers
        clock.advance(1)
        statements.start()
        response = await http.get("/read")
        assert statements.delta() == {"select": 1, "update": 1}
        assert set_cookie(response)["session"]["max-age"] == str(provider.max_lifetime)
        # Active use keeps the session alive past its first idle deadline.
        for _ in range(3):
            clock.advance(provider.max_lifetime - 1)
            assert (await http.get("/read")).json() == {"user": "ada"}


# -- saving before headers, and its failures ------------------------------------------------------


async def test_the_write_is_done_before_the_response_starts(provider: MySQLSessionProvider) -> None:
    seen: list[int] = []
    app = make_app(provider)

    async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
        async def watching(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                seen.append(await provider.all())
            await send(message)

        await app(scope, receive, watching)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=spy), base_url="http://t") as http:
        await http.get("/set", params={"a": "1"})
    assert seen == [1]


async def test_server_error_responses_do_not_save(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider)) as http:
        response = await http.get("/fail")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert await provider.all() == 0


async def test_oversized_session_is_a_413_and_the_stored_data_stays(
    provider: MySQLSessionProvider,
) -> None:
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        response = await http.get("/too-big", params={"size": provider.max_size + 1})
    assert response.status_code == 413
    assert "set-cookie" not in response.headers
    assert dict(await provider.read(sid)) == {"user": "ada"}


async def test_a_slow_request_finishing_after_a_logout_gets_409_and_does_not_resurrect(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    app = make_app(provider)
    async with client(app) as http:
        sid = await logged_in(http)
        slow = asyncio.create_task(http.get("/slow-incr"))
        await asyncio.wait_for(app.state.entered.wait(), 10)
        assert (await http.get("/logout")).status_code == 200
        app.state.gate.set()
        response = await asyncio.wait_for(slow, 10)
    assert response.status_code == 409
    assert set_cookie(response)["session"]["max-age"] == "0"
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]
    assert not await provider.exist(sid)


def lifespan_provider(table: str) -> MySQLSessionProvider:
    """A provider nobody opened: the app's lifespan must open and close it."""
    return MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None)


async def test_lifespan_opens_and_closes_the_provider(provider: MySQLSessionProvider, table: str) -> None:
    own = lifespan_provider(table)
    async with serve(make_app(own)) as tc:
        assert own.is_open
        assert (await tc.get("/set", params={"a": "1"})).status_code == 200
    assert not own.is_open


async def test_lifespan_leaves_an_explicitly_opened_provider_to_its_owner(
    provider: MySQLSessionProvider,
) -> None:
    async with serve(make_app(provider)):
        pass
    assert provider.is_open


async def test_websocket_reads_the_session_and_saves_changes_on_close(
    table: str, provider: MySQLSessionProvider
) -> None:
    async with serve(make_app(lifespan_provider(table))) as tc:
        await tc.get("/set", params={"user": "ada"})
        async with websocket_connect(tc, "/ws") as ws:
            await ws.send_text("hello")
            assert await ws.receive_text() == "ada: hello"
            await ws.send_text("set color=blue")
            assert await ws.receive_text() == "ok"
        assert (await tc.get("/read")).json() == {"user": "ada", "color": "blue"}


async def test_websocket_changes_can_be_saved_mid_connection(
    table: str, provider: MySQLSessionProvider
) -> None:
    async with serve(make_app(lifespan_provider(table))) as tc:
        await tc.get("/set", params={"user": "ada"})
        async with websocket_connect(tc, "/ws") as ws:
            await ws.send_text("set step=1")
            assert await ws.receive_text() == "ok"
            await ws.send_text("save")
            assert await ws.receive_text() == "saved"
            assert (await tc.get("/read")).json() == {"user": "ada", "step": "1"}


# -- header transport, two workers, logs ------------------------------------------------------------


async def test_header_transport_issues_and_accepts_the_id_in_a_header(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider, header_name="X-Session-Id")) as http:
        created = await http.get("/set", params={"user": "ada"})
        sid = created.headers["x-session-id"]
        assert "set-cookie" not in created.headers
        assert created.headers["vary"] == "x-session-id"
        read = await http.get("/read", headers={"X-Session-Id": sid})
        assert read.json() == {"user": "ada"}
        # A cookie is not a transport in header mode.
        assert (await http.get("/read", headers={"cookie": f"session={sid}"})).json() == {}
        logout = await http.get("/logout", headers={"X-Session-Id": sid})
        assert logout.headers["x-session-id"] == ""
    assert not await provider.exist(sid)


async def test_two_app_instances_share_one_table_like_two_workers(
    provider: MySQLSessionProvider, table: str, clock: FakeClock
) -> None:
    other = MySQLSessionProvider(MYSQL_URL, table=table, clock=clock, gc_interval=None)
    async with other, client(make_app(provider)) as worker_a, client(make_app(other)) as worker_b:
        sid = await logged_in(worker_a)
        cookie = {"cookie": f"session={sid}"}
        assert (await worker_b.get("/incr", headers=cookie)).json() == {"n": 1}
        assert (await worker_a.get("/incr", headers=cookie)).json() == {"n": 2}
        assert (await worker_b.get("/read", headers=cookie)).json() == {"user": "ada", "n": 2}
        await worker_a.get("/logout", headers=cookie)
        assert (await worker_b.get("/read", headers=cookie)).json() == {}


async def test_session_ids_never_appear_in_logs(
    provider: MySQLSessionProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    planted = provider.new_session_id()
    async with client(make_app(provider)) as http:
        sid = await logged_in(http)
        await http.get("/login")
        rotated = set_cookie(await http.get("/incr")).get("session")
        await http.get("/read", headers={"cookie": f"session={planted}"})
        await http.get("/logout")
    assert "unknown or expired session id" in caplog.text  # something was logged
    for secret in (sid, planted, rotated.value if rotated else sid):
        assert secret not in caplog.text


async def test_absolute_lifetime_ends_an_active_session(table: str, clock: FakeClock) -> None:
    provider = provider_on(table, clock, max_lifetime=600, absolute_lifetime=1800)
    async with provider, client(make_app(provider)) as http:
        await logged_in(http)
        for _ in range(5):
            clock.advance(300)
            assert (await http.get("/read")).json() == {"user": "ada"}
        clock.advance(300)  # 1800 s since creation, however active
        assert (await http.get("/read")).json() == {}


async def test_database_down_gives_503_only_to_routes_that_use_the_session(table: str) -> None:
    provider = MySQLSessionProvider(
        "mysql://root@127.0.0.1:1/test?connect_timeout=1&timeout=1", table=table, gc_interval=None
    )
    async with client(make_app(provider)) as http:
        cookie = {"cookie": f"session={provider.new_session_id()}"}
        assert (await http.get("/noop", headers=cookie)).status_code == 200
        down = await http.get("/read", headers=cookie)
        assert down.status_code == 503
        assert down.text == "Session storage is unavailable, please retry."
        assert "set-cookie" not in down.headers
        assert (await http.get("/set", params={"a": "1"})).status_code == 503
