"""Reference without a database: Starlette's signed-cookie SessionMiddleware (itsdangerous).

The session data travels in the cookie; bench/run.py signs one cookie per pre-filled
session with the same secret, so the read and write workloads see the same data.
"""

from __future__ import annotations

import os
import secrets

from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

SECRET = os.environ.get("BENCH_COOKIE_SECRET", "bench-secret")
DENIED = PlainTextResponse("no session", status_code=403)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    user = request.session.get("user_id")
    if user is None:
        return DENIED
    return JSONResponse({"user_id": user})


async def write(request: Request) -> Response:
    session = request.session
    if "user_id" not in session:
        return DENIED
    session["counter"] = session.get("counter", 0) + 1
    return JSONResponse({"counter": session["counter"]})


async def skip(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def login(request: Request) -> Response:
    request.session.update(
        {
            "user_id": 1,
            "name": "new-user",
            "roles": ["reader", "writer"],
            "csrf": secrets.token_hex(16),
            "counter": 0,
        }
    )
    return JSONResponse({"user_id": 1})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/read", read),
        Route("/write", write),
        Route("/skip", skip),
        Route("/login", login),
    ]
)
app.add_middleware(SessionMiddleware, secret_key=SECRET, max_age=86400)
