"""Example FastAPI app: the same app as ``examples/starlette_app.py`` (same routes, methods and
answers, listed in ``examples/demo_page.py``), with the session as a dependency and the
middleware in lazy mode, so routes that do not ask for the session never read it.

``make demo-fastapi``, or ``uvicorn examples.fastapi_app:app`` from the repository root; the
session table is created on startup. ``SESSION_TABLE`` picks the table,
``SESSION_COOKIE_SECURE=1`` the ``__Host-session`` cookie for https.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import Response

from asgi_mysql_session import (
    MySQLSessionProvider,
    PrometheusObserver,
    SessionMiddleware,
    SessionObserver,
    SessionStore,
    regenerate_session,
    session_dependency,
)
from examples import demo_page as demo

app = FastAPI()

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
except ImportError:  # metrics are optional: pip install asgi_mysql_session[metrics]
    observer = SessionObserver()
else:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


provider = MySQLSessionProvider(
    os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    table=os.environ.get("SESSION_TABLE", "session"),
    create_table=True,
    max_lifetime=3600,
    gc_interval=300,
    observer=observer,
)
app.add_middleware(
    SessionMiddleware,
    provider=provider,
    lazy=True,
    exclude_paths=["/health", "/metrics"],
    **demo.cookie_settings(),
)

Session = Annotated[SessionStore, Depends(session_dependency)]


@app.get("/")
@app.get("/login")
async def home(request: Request, session: Session) -> Response:
    user = session.get("user")
    sessions = await provider.sessions_of(user) if user else []
    return demo.page(request, session, sessions)


@app.post("/login")
async def login(request: Request, session: Session) -> Response:
    fields = await demo.checked_fields(request, session)
    if fields is None:
        return demo.refused(request)
    user = demo.clean(fields.get("user") or request.query_params.get("user"))
    if user is None:
        return demo.invalid(request, "user")
    session["user"] = user
    session.owner = user  # so /logout-everywhere can find every session of this user
    await regenerate_session(request)  # a new id at login: a planted id is worthless
    demo.renew_csrf_token(session)  # and a new token: a planted one is too
    return demo.done(request, {"user": user})


@app.post("/counter")
async def counter(request: Request, session: Session) -> Response:
    if await demo.checked_fields(request, session) is None:
        return demo.refused(request)
    session["n"] = session.get("n", 0) + 1
    return demo.done(request, {"n": session["n"]})


@app.post("/theme")
@app.post("/language")
async def preference(request: Request, session: Session) -> Response:
    """Each route sets its own key (two tabs may do so at once)."""
    fields = await demo.checked_fields(request, session)
    if fields is None:
        return demo.refused(request)
    key = request.url.path.strip("/")
    value = demo.clean(fields.get("value"))
    if value is None:
        return demo.invalid(request, "value")
    session[key] = value
    return demo.done(request, {key: value})


@app.get("/csrf")
async def csrf(session: Session) -> Response:
    return demo.token_text(session)


@app.get("/whoami")
async def whoami(session: Session, response: Response) -> dict[str, str | None]:
    response.headers.update(demo.NO_STORE)
    return {"user": session.get("user")}


@app.post("/logout")
async def logout(request: Request, session: Session) -> Response:
    if await demo.checked_fields(request, session) is None:
        return demo.refused(request)
    session.clear()  # deletes the row and expires the cookie
    return demo.done(request, {"ok": True})


@app.post("/logout-everywhere")
async def logout_everywhere(request: Request, session: Session) -> Response:
    if await demo.checked_fields(request, session) is None:
        return demo.refused(request)
    user = session.get("user")
    ended = await provider.destroy_owner(user) if user else 0
    session.clear()
    return demo.done(request, {"ended": ended})


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.websocket("/ws")
async def echo(websocket: WebSocket, session: Session) -> None:
    await websocket.accept()
    user = session.get("user") or "stranger"
    async for text in websocket.iter_text():
        await websocket.send_text(f"{user}: {text}")
