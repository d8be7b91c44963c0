"""Example Starlette app: the demo page at ``/`` (login with a CSRF token, a counter,
preferences, "your sessions", logout, log out everywhere), its JSON API for curl, a WebSocket
echo, and Prometheus metrics on ``/metrics`` (with the ``[metrics]`` extra installed).

Run it with ``make demo``, or ``MYSQL_URL=mysql://root@127.0.0.1:3306/test
uvicorn examples.starlette_app:app`` from the repository root. ``examples/fastapi_app.py`` is
the same app in FastAPI; the routes and rules (HTML or JSON, CSRF, caching) are listed in
``examples/demo_page.py``. The provider is opened (creating the table) and closed by the app's
lifespan; expired sessions are swept in the background. ``SESSION_TABLE`` picks the table,
``SESSION_COOKIE_SECURE=1`` the ``__Host-session`` cookie for https.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_mysql_session import (
    MySQLSessionProvider,
    PrometheusObserver,
    SessionMiddleware,
    SessionObserver,
    regenerate_session,
)
from examples import demo_page as demo

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
except ImportError:  # metrics are optional: pip install asgi_mysql_session[metrics]
    observer, metrics_routes = SessionObserver(), []
else:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    metrics_routes = [Route("/metrics", metrics)]  # a Route, not a Mount: no redirect to /metrics/

COOKIE = demo.cookie_settings()  # SESSION_COOKIE_SECURE=1: the __Host-session cookie
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
    sessions = await provider.sessions_of(user) if user else []
    return demo.page(request, request.session, sessions)


async def login(request: Request) -> Response:
    fields = await demo.checked_fields(request, request.session)
    if fields is None:
        return demo.refused(request)
    user = demo.clean(fields.get("user") or request.query_params.get("user"))
    if user is None:
        return demo.invalid(request, "user")
    request.session["user"] = user
    request.session.owner = user  # so /logout-everywhere can find every session of this user
    await regenerate_session(request)  # a new id at login: a planted id is worthless
    demo.renew_csrf_token(request.session)  # and a new token: a planted one is too
    return demo.done(request, {"user": user})


async def counter(request: Request) -> Response:
    if await demo.checked_fields(request, request.session) is None:
        return demo.refused(request)
    request.session["n"] = request.session.get("n", 0) + 1
    return demo.done(request, {"n": request.session["n"]})


async def preference(request: Request) -> Response:
    """POST /theme and /language: each sets its own key (two tabs may do so at once)."""
    fields = await demo.checked_fields(request, request.session)
    if fields is None:
        return demo.refused(request)
    key = request.url.path.strip("/")
    value = demo.clean(fields.get("value"))
    if value is None:
        return demo.invalid(request, "value")
    request.session[key] = value
    return demo.done(request, {key: value})


async def csrf(request: Request) -> Response:
    return demo.token_text(request.session)


async def whoami(request: Request) -> Response:
    return JSONResponse({"user": request.session.get("user")}, headers=demo.NO_STORE)


async def logout(request: Request) -> Response:
    if await demo.checked_fields(request, request.session) is None:
        return demo.refused(request)
    request.session.clear()  # deletes the row and expires the cookie
    return demo.done(request, {"ok": True})


async def logout_everywhere(request: Request) -> Response:
    if await demo.checked_fields(request, request.session) is None:
        return demo.refused(request)
    user = request.session.get("user")
    ended = await provider.destroy_owner(user) if user else 0
    request.session.clear()
    return demo.done(request, {"ended": ended})


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    user = websocket.session.get("user") or "stranger"
    async for text in websocket.iter_text():
        await websocket.send_text(f"{user}: {text}")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/login", home, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/counter", counter, methods=["POST"]),
        Route("/theme", preference, methods=["POST"]),
        Route("/language", preference, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/logout-everywhere", logout_everywhere, methods=["POST"]),
        Route("/csrf", csrf),
        Route("/whoami", whoami),
        Route("/health", health),
        WebSocketRoute("/ws", echo),
        *metrics_routes,
    ],
    middleware=[
        Middleware(SessionMiddleware, provider=provider, exclude_paths=["/health", "/metrics"], **COOKIE)
    ],
)
