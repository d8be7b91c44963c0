"""A small Starlette app exercising every way a route can use the session."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_mysql_session import (
    MySQLSessionProvider,
    SessionMiddleware,
    load_session,
    regenerate_session,
    save_session,
)


async def noop(request: Request) -> Response:
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def set_values(request: Request) -> Response:
    for key, value in request.query_params.items():
        request.session[key] = value
    return JSONResponse(dict(request.session))


async def incr(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse({"n": request.session["n"]})


async def login(request: Request) -> Response:
    request.session["user"] = request.query_params.get("user", "ada")
    await regenerate_session(request)
    return JSONResponse({"user": request.session["user"]})


async def logout(request: Request) -> Response:
    request.session.clear()
    return PlainTextResponse("bye")


async def lazy_read(request: Request) -> Response:
    session = await load_session(request)
    return JSONResponse(dict(session))


async def slow_incr(request: Request) -> Response:
    """Reads the session, then waits for the test to open the gate before writing."""
    n = request.session.get("n", 0)
    request.app.state.entered.set()
    await request.app.state.gate.wait()
    request.session["n"] = n + 1
    return JSONResponse({"n": n + 1})


async def fail(request: Request) -> Response:
    request.session["lost"] = True
    return PlainTextResponse("boom", status_code=500)


async def cached(request: Request) -> Response:
    request.session["x"] = 1
    return PlainTextResponse("ok", headers={"cache-control": "private, max-age=5"})


async def too_big(request: Request) -> Response:
    request.session["blob"] = b"x" * int(request.query_params["size"])
    return PlainTextResponse("ok")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        if text == "save":
            await save_session(websocket)
            await websocket.send_text("saved")
        elif text.startswith("set "):
            key, _, value = text[4:].partition("=")
            websocket.session[key] = value
            await websocket.send_text("ok")
        else:
            await websocket.send_text(f"{websocket.session.get('user')}: {text}")


def make_app(provider: MySQLSessionProvider, **options: Any) -> Starlette:
    routes = [
        Route("/noop", noop),
        Route("/health", noop),
        Route("/read", read),
        Route("/set", set_values),
        Route("/incr", incr),
        Route("/login", login),
        Route("/logout", logout),
        Route("/lazy", lazy_read),
        Route("/slow-incr", slow_incr),
        Route("/fail", fail),
        Route("/cached", cached),
        Route("/too-big", too_big),
        Route("/touch", touch_only),
        WebSocketRoute("/ws", echo),
    ]
    app = Starlette(routes=routes)
    app.state.gate = asyncio.Event()
    app.state.entered = asyncio.Event()
    app.add_middleware(SessionMiddleware, provider=provider, **options)
    return app


def client(app: Starlette, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def touch_only(request: Request) -> Response:
    """Takes request.session without reading a key, as a route that passes it along does."""
    request.session  # noqa: B018 - Starlette marks the session accessed here
    return PlainTextResponse("ok")
