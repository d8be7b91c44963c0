"""The examples run as documented: lifespan opens the provider, the flows work end to end."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import pytest
from conftest import MYSQL_URL
from starlette.testclient import TestClient


def load_example(name: str, table: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("MYSQL_URL", MYSQL_URL)
    monkeypatch.setenv("SESSION_TABLE", table)
    monkeypatch.syspath_prepend("examples")
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_starlette_example_login_counter_websocket_logout(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("starlette_app", table, monkeypatch)
    with TestClient(example.app) as http:
        assert http.get("/login", params={"user": "ada"}).json() == {"user": "ada"}
        assert http.post("/counter").json() == {"n": 1}
        assert http.post("/counter").json() == {"n": 2}
        assert http.get("/").text == "hello ada; visits counted: 2\n"
        with http.websocket_connect("/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "ada: hi"
        assert http.post("/logout").status_code == 200
        assert http.get("/whoami").json() == {"user": None}
    assert not example.provider.is_open


def test_starlette_example_logs_out_everywhere(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("starlette_app", table, monkeypatch)
    with TestClient(example.app) as http:
        http.get("/login", params={"user": "ada"})
        laptop = http.cookies["session"]
        http.cookies.clear()
        http.get("/login", params={"user": "ada"})  # the phone
        assert http.post("/logout-everywhere").json() == {"ended": 2}
        http.cookies.clear()
        http.cookies.set("session", laptop)
        assert http.get("/whoami").json() == {"user": None}


def test_fastapi_example_uses_the_session_dependency(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("fastapi_app", table, monkeypatch)
    with TestClient(example.app) as http:
        assert http.post("/login", params={"user": "bob"}).json() == {"user": "bob"}
        assert http.post("/counter").json() == {"n": 1}
        assert http.get("/whoami").json() == {"user": "bob"}
        with http.websocket_connect("/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "bob: hi"
        assert http.get("/health").json() == {"ok": True}
        assert http.post("/logout").json() == {"ok": True}
        assert http.get("/whoami").json() == {"user": None}
