"""The examples run as documented: lifespan opens the provider, the flows work end to end.

``examples/starlette_app.py`` and ``examples/fastapi_app.py`` are the same app, so every test
runs against both. The demo page in a real browser: tests/browser (``make test-browser``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from asgitools import serve, websocket_connect
from conftest import MYSQL_URL

ROOT = Path(__file__).resolve().parent.parent
APPS = ["examples.starlette_app", "examples.fastapi_app"]
HTML = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser sends


def load_example(name: str, table: str, monkeypatch: pytest.MonkeyPatch, secure: bool = False) -> ModuleType:
    monkeypatch.setenv("MYSQL_URL", MYSQL_URL)
    monkeypatch.setenv("SESSION_TABLE", table)
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "1" if secure else "0")
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


async def token(http: httpx.AsyncClient) -> str:
    answer = await http.get("/csrf")
    assert answer.headers["cache-control"] == "no-store"
    return answer.text


async def log_in(http: httpx.AsyncClient, user: str) -> None:
    assert (
        await http.post("/login", data={"user": user}, headers={"x-csrf-token": await token(http)})
    ).json() == {"user": user}


@pytest.fixture(params=APPS, ids=["starlette", "fastapi"])
def example(request: pytest.FixtureRequest, table: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_example(request.param, table, monkeypatch)


async def test_login_counter_preferences_websocket_logout(example: ModuleType) -> None:
    async with serve(example.app) as http:
        assert (await http.get("/")).json()["user"] is None
        await log_in(http, "ada")
        csrf = {"x-csrf-token": await token(http)}
        assert (await http.post("/counter", headers=csrf)).json() == {"n": 1}
        assert (await http.post("/counter", headers=csrf)).json() == {"n": 2}
        assert (await http.post("/theme", data={"value": "dark"}, headers=csrf)).json() == {"theme": "dark"}
        assert (await http.post("/language", data={"value": "fr"}, headers=csrf)).json() == {"language": "fr"}
        state = (await http.get("/")).json()
        assert {k: state[k] for k in ("user", "n", "theme", "language")} == {
            "user": "ada",
            "n": 2,
            "theme": "dark",
            "language": "fr",
        }
        assert [s["current"] for s in state["sessions"]] == [True]
        assert (await http.get("/whoami")).json() == {"user": "ada"}
        async with websocket_connect(http, "/ws") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "ada: hi"
        assert (await http.post("/logout", headers=csrf)).json() == {"ok": True}
        assert (await http.get("/whoami")).json() == {"user": None}
    assert not example.provider.is_open


async def test_login_by_query_string_as_before(example: ModuleType) -> None:
    async with serve(example.app) as http:
        csrf = {"x-csrf-token": await token(http)}
        assert (await http.post("/login", params={"user": "bob"}, headers=csrf)).json() == {"user": "bob"}
        assert (await http.get("/whoami")).json() == {"user": "bob"}


async def test_same_routes_and_methods(example: ModuleType) -> None:
    async with serve(example.app) as http:
        for path in ("/counter", "/theme", "/language", "/logout", "/logout-everywhere"):
            assert (await http.get(path)).status_code == 405, path
        for path in ("/", "/login", "/csrf", "/whoami", "/health"):
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/health")).json() == {"ok": True}


async def test_every_post_needs_the_csrf_token(example: ModuleType) -> None:
    async with serve(example.app) as http:
        for path in ("/login", "/counter", "/theme", "/logout", "/logout-everywhere"):
            assert (await http.post(path, data={"user": "eve", "value": "x"})).status_code == 403, path
        assert "session" not in http.cookies  # a refused POST without a session creates none
        await log_in(http, "ada")
        old = await token(http)
        for bad in ({}, {"x-csrf-token": "wrong"}, {"x-csrf-token": old + "x"}, {"x-csrf-token": ""}):
            answer = await http.post("/counter", headers=bad)
            assert answer.status_code == 403
            assert answer.headers["cache-control"] == "no-store"
        by_form = await http.post("/counter", data={"csrf": old})  # the form field works too
        assert by_form.json() == {"n": 1}
        assert (await http.get("/")).json()["n"] == 1


async def test_login_renews_the_id_and_the_token(example: ModuleType) -> None:
    async with serve(example.app) as http:
        before = await token(http)
        anonymous_id = http.cookies["session"]
        await log_in(http, "ada")
        assert http.cookies["session"] != anonymous_id
        assert await token(http) != before
        assert (await http.post("/counter", headers={"x-csrf-token": before})).status_code == 403


async def test_the_html_page(example: ModuleType) -> None:
    async with serve(example.app) as http:
        page = await http.get("/", headers=HTML)
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert 'action="/login"' in page.text and 'name="csrf"' in page.text
        assert (await http.get("/login", headers=HTML)).text == page.text  # the same form
        csrf = await token(http)
        answer = await http.post(
            "/login", data={"user": "<b>ada</b>", "csrf": csrf}, headers=HTML, follow_redirects=False
        )
        assert (answer.status_code, answer.headers["location"]) == (303, "/")
        page = await http.get("/", headers=HTML)
        assert "&lt;b&gt;ada&lt;/b&gt;" in page.text and "<b>ada</b>" not in page.text
        assert 'id="counter">0<' in page.text and "this browser" in page.text
        assert (
            await http.post("/counter", data={"csrf": await token(http)}, headers=HTML)
        ).status_code == 200  # 303 -> /
        assert 'id="counter">1<' in (await http.get("/", headers=HTML)).text
        refused = await http.post("/counter", data={"csrf": "forged"}, headers=HTML)
        assert refused.status_code == 403 and 'id="error"' in refused.text


async def test_bad_user_names_are_refused(example: ModuleType) -> None:
    async with serve(example.app) as http:
        csrf = {"x-csrf-token": await token(http)}
        for user in ("", "   ", "x" * 65):
            assert (await http.post("/login", data={"user": user}, headers=csrf)).status_code == 400
        assert (await http.get("/whoami")).json() == {"user": None}


async def test_logs_out_everywhere(example: ModuleType) -> None:
    async with serve(example.app) as http:
        await log_in(http, "ada")
        laptop = http.cookies["session"]
        http.cookies.clear()
        await log_in(http, "ada")  # the phone
        state = (await http.get("/")).json()
        assert sorted(s["current"] for s in state["sessions"]) == [False, True]
        assert (
            await http.post("/logout-everywhere", headers={"x-csrf-token": await token(http)})
        ).json() == {"ended": 2}
        http.cookies.clear()
        http.cookies.set("session", laptop)
        assert (await http.get("/whoami")).json() == {"user": None}


async def test_metrics_answer_at_exactly_metrics(example: ModuleType) -> None:
    async with serve(example.app) as http:
        answer = await http.get("/metrics", follow_redirects=False)
        assert answer.status_code == 200
        assert "asgi_mysql_session_" in answer.text
        assert "set-cookie" not in answer.headers


@pytest.mark.parametrize("name", APPS)
async def test_secure_configuration(name: str, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example(name, table, monkeypatch, secure=True)
    async with serve(example.app, base_url="https://testserver") as http:
        answer = await http.get("/csrf")
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-session=") and "; secure" in cookie and "; httponly" in cookie
        await log_in(http, "ada")
        assert (await http.get("/whoami")).json() == {"user": "ada"}
