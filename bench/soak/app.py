"""The app under soak: Starlette + SessionMiddleware, configured from the environment.

bench/soak/soak.py runs it under ``uvicorn --workers 2`` with its DSN pointing at the fault
proxy. Routes:

``POST /login?user=U``  a new session holding ``user`` (owner set, id rotated as a real login does)
``POST /incr``          ``n += 1``, answers ``{"user": ..., "n": new value}``; 403 without a login
``GET  /read``          ``{"user": ..., "n": ...}``; 403 without a login
``POST /logout``        ``request.session.clear()``: the row is deleted, the cookie expired
``GET  /ping``          never touches the session (in ``exclude_paths``)

Every response, the middleware's own 503/409 included, carries ``x-worker: PID``.

Environment: SOAK_MYSQL_URL (DSN, with its pool/timeout options), SOAK_TABLE (must exist),
SOAK_MAX_LIFETIME (s), SOAK_GC_INTERVAL (s), SOAK_SERIALIZE (``1``: /incr in serialized mode).
The package's logger goes to stderr at INFO with unix timestamps, so the soak can read
sweeps and backend errors off the server log and place them on its own timeline.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from asgi_mysql_session import MySQLSessionProvider, SessionMiddleware, regenerate_session

URL = os.environ.get("SOAK_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TABLE = os.environ.get("SOAK_TABLE", "soak_session")
MAX_LIFETIME = int(os.environ.get("SOAK_MAX_LIFETIME", "20"))
GC_INTERVAL = float(os.environ.get("SOAK_GC_INTERVAL", "5"))
SERIALIZE = os.environ.get("SOAK_SERIALIZE", "") == "1"
PID = str(os.getpid())

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(created).3f %(process)d %(levelname)s %(message)s"))
_logger = logging.getLogger("asgi_mysql_session")
_logger.addHandler(_handler)
_logger.setLevel(logging.INFO)
_logger.propagate = False

provider = MySQLSessionProvider(
    URL,
    table=TABLE,
    max_lifetime=MAX_LIFETIME,
    absolute_lifetime=None,
    gc_interval=GC_INTERVAL,
)


def _answer(body: object, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


async def login(request: Request) -> Response:
    user = request.query_params.get("user", "anon")
    store = await regenerate_session(request)  # a new id at login (free for a new session)
    store["user"] = user
    store.owner = user  # what "log out everywhere" would use
    return _answer({"user": user})


async def incr(request: Request) -> Response:
    session = request.session
    if "user" not in session:
        return _answer({"error": "not logged in"}, 403)
    n = session.get("n", 0) + 1
    session["n"] = n
    return _answer({"user": session["user"], "n": n})


async def read(request: Request) -> Response:
    session = request.session
    if "user" not in session:
        return _answer({"error": "not logged in"}, 403)
    return _answer({"user": session["user"], "n": session.get("n", 0)})


async def logout(request: Request) -> Response:
    request.session.clear()
    return _answer({"ok": True})


async def ping(request: Request) -> Response:
    return PlainTextResponse("ok")


sessions = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/incr", incr, methods=["POST"]),
        Route("/read", read),
        Route("/logout", logout, methods=["POST"]),
        Route("/ping", ping),
    ]
)
sessions.add_middleware(
    SessionMiddleware,
    provider=provider,
    exclude_paths=["/ping"],
    serialize=["/incr"] if SERIALIZE else False,
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The app, with ``x-worker`` on every response so the soak can tell the workers apart."""

    async def tagged(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"x-worker", PID.encode())]
        await send(message)

    await sessions(scope, receive, tagged if scope["type"] == "http" else send)
