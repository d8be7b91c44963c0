"""Example Starlette app: login, a counter, logout, log out everywhere, a WebSocket echo,
and Prometheus metrics on /metrics (with the ``[metrics]`` extra installed).

Run it with ``make demo``, or ``MYSQL_URL=mysql://root@127.0.0.1:3306/test
uvicorn examples.starlette_app:app``. The provider is opened (creating the table) and closed
by the app's lifespan; expired sessions are swept in the background.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_mysql_session import (
    MySQLSessionProvider,
    PrometheusObserver,
    SessionMiddleware,
    SessionObserver,
    regenerate_session,
)

try:
    from prometheus_client import CollectorRegistry, make_asgi_app
except ImportError:  # metrics are optional: pip install asgi_mysql_session[metrics]
    observer, metrics_routes = SessionObserver(), []
else:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    metrics_routes = [Mount("/metrics", make_asgi_app(registry))]

provider = MySQLSessionProvider(
    os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    table=os.environ.get("SESSION_TABLE", "session"),
    create_table=True,
    max_lifetime=3600,
    gc_interval=300,
    observer=observer,
)


async def home(request: Request) -> Response:
    user = request.session.get("user")
    return PlainTextResponse(f"hello {user or 'stranger'}; visits counted: {request.session.get('n', 0)}\n")


async def login(request: Request) -> Response:
    user = request.query_params.get("user", "ada")
    request.session["user"] = user
    request.session.owner = user  # so /logout-everywhere can find every session of this user
    await regenerate_session(request)  # a new id at login: a planted id is worthless
    return JSONResponse({"user": user})


async def counter(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse({"n": request.session["n"]})


async def whoami(request: Request) -> Response:
    return JSONResponse({"user": request.session.get("user")})


async def logout(request: Request) -> Response:
    request.session.clear()  # deletes the row and expires the cookie
    return PlainTextResponse("logged out\n")


async def logout_everywhere(request: Request) -> Response:
    user = request.session.get("user")
    ended = await provider.destroy_owner(user) if user else 0
    request.session.clear()
    return JSONResponse({"ended": ended})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    user = websocket.session.get("user") or "stranger"
    async for text in websocket.iter_text():
        await websocket.send_text(f"{user}: {text}")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/counter", counter, methods=["GET", "POST"]),
        Route("/whoami", whoami),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/logout-everywhere", logout_everywhere, methods=["POST"]),
        Route("/health", health),
        WebSocketRoute("/ws", echo),
        *metrics_routes,
    ],
    middleware=[Middleware(SessionMiddleware, provider=provider, exclude_paths=["/health", "/metrics"])],
)
