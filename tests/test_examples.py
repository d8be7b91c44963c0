"""The examples run as documented: lifespan opens the provider, the flows work end to end."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import pytest
from asgitools import serve, websocket_connect
from conftest import MYSQL_URL


def load_example(name: str, table: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("MYSQL_URL", MYSQL_URL)
    monkeypatch.setenv("SESSION_TABLE", table)
    monkeypatch.syspath_prepend("examples")
    sys.modules.pop(name, None)
    return importlib.import_module(name)


async def test_starlette_example_login_counter_websocket_logout(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("starlette_app", table, monkeypatch)
    async with serve(example.app) as http:
        assert (await http.get("/login", params={"user": "ada"})).json() == {"user": "ada"}
        assert (await http.post("/counter")).json() == {"n": 1}
        assert (await http.post("/counter")).json() == {"n": 2}
        assert (await http.get("/")).text == "hello ada; visits counted: 2\n"
        async with websocket_connect(http, "/ws") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "ada: hi"
        assert (await http.post("/logout")).status_code == 200
        assert (await http.get("/whoami")).json() == {"user": None}
    assert not example.provider.is_open


async def test_starlette_example_logs_out_everywhere(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("starlette_app", table, monkeypatch)
    async with serve(example.app) as http:
        await http.get("/login", params={"user": "ada"})
        laptop = http.cookies["session"]
        http.cookies.clear()
        await http.get("/login", params={"user": "ada"})  # the phone
        assert (await http.post("/logout-everywhere")).json() == {"ended": 2}
        http.cookies.clear()
        http.cookies.set("session", laptop)
        assert (await http.get("/whoami")).json() == {"user": None}


async def test_fastapi_example_uses_the_session_dependency(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("fastapi_app", table, monkeypatch)
    async with serve(example.app) as http:
        assert (await http.post("/login", params={"user": "bob"})).json() == {"user": "bob"}
        assert (await http.post("/counter")).json() == {"n": 1}
        assert (await http.get("/whoami")).json() == {"user": "bob"}
        async with websocket_connect(http, "/ws") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "bob: hi"
        assert (await http.get("/health")).json() == {"ok": True}
        assert (await http.post("/logout")).json() == {"ok": True}
        assert (await http.get("/whoami")).json() == {"user": None}
