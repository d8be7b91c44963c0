"""SessionStore is a dict, as Starlette's Session is: serializes, copies, type-checks, tracks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import StatementCounter, make_session
from sessionapp import client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_mysql_session import (
    MySQLSessionProvider,
    SaveResult,
    SessionMiddleware,
    SessionNotLoaded,
    SessionStore,
)


async def loaded(provider: MySQLSessionProvider, **values: Any) -> SessionStore:
    """A stored session read back: not accessed, not modified."""
    sid = await make_session(provider, **values)
    store = await provider.read(sid)
    assert not store.accessed and not store.modified
    return store


async def test_the_store_is_a_dict_that_serializes_and_copies(provider: MySQLSessionProvider) -> None:
    store = await loaded(provider, user="ada", cart=[1, 2])
    assert isinstance(store, dict)
    assert json.dumps(store, sort_keys=True) == '{"cart": [1, 2], "user": "ada"}'
    assert store.accessed  # json.dumps calls items()
    copy = store.copy()
    assert type(copy) is dict and copy == {"user": "ada", "cart": [1, 2]}
    assert dict(store) == {**store} == copy
    merged = store | {"x": 1}
    assert type(merged) is dict and merged == {"user": "ada", "cart": [1, 2], "x": 1}
    assert {"x": 1} | store == {"x": 1, "user": "ada", "cart": [1, 2]}
    assert "x" not in store and not store.modified
    assert store == {"user": "ada", "cart": [1, 2]}


async def test_starlette_responses_serialize_the_store(provider: MySQLSessionProvider) -> None:
    from starlette.responses import JSONResponse

    store = await loaded(provider, n=1)
    assert JSONResponse({"session": store}).body == b'{"session":{"n":1}}'


async def test_every_mutating_method_is_tracked_and_saved(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = await make_session(provider, a=1, b=2, c=3)
    store = await provider.read(sid)
    store.update({"d": 4}, e=5)
    store |= {"f": 6}
    assert store.pop("a") == 1
    assert store.popitem() == ("f", 6)  # the newest item, as dict.popitem
    assert store.setdefault("g", 7) == 7
    assert store.setdefault("g", 8) == 7
    assert store.modified
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    assert dict((await provider.read(sid)).items()) == {"b": 2, "c": 3, "d": 4, "e": 5, "g": 7}


async def test_reads_and_misses_do_not_mark_modified(provider: MySQLSessionProvider) -> None:
    store = await loaded(provider, a="1")
    assert store.pop("missing", None) is None
    assert not store.accessed and not store.modified  # as Starlette's Session
    assert store.setdefault("a", "2") == "1"
    assert store.accessed and not store.modified
    with pytest.raises(KeyError):
        store.pop("missing")
    assert await store.release() is SaveResult.NOTHING


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update({"k": (1, 2)}),
        lambda s: s.update(k={1}),
        lambda s: s.__ior__({"k": object()}),
        lambda s: s.setdefault("k", (1,)),
    ],
)
async def test_type_checks_cover_every_way_in(provider: MySQLSessionProvider, change: Any) -> None:
    store = await loaded(provider, a=1)
    with pytest.raises(TypeError, match="'k'"):
        change(store)
    assert dict(store.items()) == {"a": 1}  # nothing was applied


async def test_update_checks_everything_before_changing_anything(provider: MySQLSessionProvider) -> None:
    store = await loaded(provider, a=1)
    with pytest.raises(TypeError, match="'bad'"):
        store.update({"good": 1, "bad": (1,)})
    assert "good" not in store and not store.modified


async def test_modified_is_settable_as_in_starlette(provider: MySQLSessionProvider) -> None:
    store = await loaded(provider, a=1)
    store.modified = True
    assert store.modified and store.accessed
    store.modified = False
    assert not store.modified
    store.mark_accessed()
    assert store.accessed


#: Every way to read or change the data.
USES: dict[str, Callable[[SessionStore], object]] = {
    "getitem": lambda store: store["a"],
    "get": lambda store: store.get("a"),
    "len": lambda store: len(store),
    "iter": lambda store: list(store),
    "contains": lambda store: "a" in store,
    "keys": lambda store: store.keys(),
    "values": lambda store: store.values(),
    "items": lambda store: store.items(),
    "copy": lambda store: store.copy(),
    "json": lambda store: json.dumps(store),
    "update": lambda store: store.update(a=1),
    "pop": lambda store: store.pop("a", None),
    "popitem": lambda store: store.popitem(),
    "setdefault": lambda store: store.setdefault("a", 1),
    "clear": lambda store: store.clear(),
    "ior": lambda store: store.__ior__({"a": 1}),
    "dict": lambda store: dict(store),
}


async def test_a_blocked_store_refuses_every_method(provider: MySQLSessionProvider) -> None:
    """In lazy mode a route's store is blocked until ``load_session``: every method that reads
    or changes the data refuses, none answers as if the session were empty."""
    refused: dict[str, bool] = {}

    async def route(request: Request) -> Response:
        for name, use in USES.items():
            try:
                use(request.session)  # type: ignore[arg-type]
            except SessionNotLoaded:
                refused[name] = True
            else:
                refused[name] = False
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", route)])
    app.add_middleware(SessionMiddleware, provider=provider, lazy=True)
    sid = await make_session(provider, a=1)
    async with client(app) as http:
        response = await http.get("/", headers={"cookie": f"session={sid}"})
    assert response.status_code == 200
    assert refused == dict.fromkeys(USES, True)
    assert dict(await provider.read(sid)) == {"a": 1}  # and nothing was written


async def test_clear_then_set_still_starts_a_new_session(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    store.clear()
    store.update(flash="bye")
    assert await store.release() is SaveResult.CREATED
    assert store.session_id != sid
    assert not await provider.exist(sid)
    assert dict((await provider.read(store.session_id)).items()) == {"flash": "bye"}
