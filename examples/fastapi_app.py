"""Example FastAPI app: the same flows, with the session as a dependency.

``uvicorn examples.fastapi_app:app``; the session table is created on startup.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, WebSocket
from starlette.requests import Request

from asgi_mysql_session import (
    MySQLSessionProvider,
    SessionMiddleware,
    SessionStore,
    regenerate_session,
    session_dependency,
)

provider = MySQLSessionProvider(
    os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    table=os.environ.get("SESSION_TABLE", "session"),
    create_table=True,
)

app = FastAPI()
app.add_middleware(SessionMiddleware, provider=provider, lazy=True, exclude_paths=["/health"])

Session = Annotated[SessionStore, Depends(session_dependency)]


@app.post("/login")
async def login(request: Request, session: Session, user: str = "ada") -> dict[str, str]:
    session["user"] = user
    session.owner = user
    await regenerate_session(request)
    return {"user": user}


@app.post("/counter")
async def counter(session: Session) -> dict[str, int]:
    session["n"] = session.get("n", 0) + 1
    return {"n": session["n"]}


@app.get("/whoami")
async def whoami(session: Session) -> dict[str, str | None]:
    return {"user": session.get("user")}


@app.post("/logout")
async def logout(session: Session) -> dict[str, bool]:
    session.clear()
    return {"ok": True}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.websocket("/ws")
async def echo(websocket: WebSocket, session: Session) -> None:
    await websocket.accept()
    user = session.get("user") or "stranger"
    async for text in websocket.iter_text():
        await websocket.send_text(f"{user}: {text}")
