"""The reference the req/s targets use: sessions in MySQL as a user would hand-write them.

An aiomysql pool and cursor, no library: read is one one-column SELECT by the SHA-256 of the
cookie with the expiry check; write is that SELECT and an upsert (``INSERT ... ON DUPLICATE
KEY UPDATE``, no version check); login is one INSERT of a new random id; skip is nothing.
Same pool size and connection options as the other apps. It has none of the package's
guarantees (absolute lifetime, lost-update check, owners, rotation), only its cost floor.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import msgpack
from drivers import require_pymysql_below_1_2
from pymysql.constants import CLIENT
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

require_pymysql_below_1_2()

URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TABLE = os.environ.get("BENCH_TABLE", "bench_session")
POOL = int(os.environ.get("BENCH_POOL", "10"))
LIFETIME = 86400
DENIED = PlainTextResponse("no session", status_code=403)

SELECT = f"SELECT session_data FROM `{TABLE}` WHERE session_key = %s AND session_expiry > %s"
UPSERT = (
    f"INSERT INTO `{TABLE}` (session_key, session_data, session_expiry) VALUES (%s, %s, %s) "
    "ON DUPLICATE KEY UPDATE session_data = VALUES(session_data), session_expiry = VALUES(session_expiry)"
)
INSERT = (
    f"INSERT INTO `{TABLE}` (session_key, session_data, session_expiry, session_created) "
    "VALUES (%s, %s, %s, %s)"
)
COOKIE = "session={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}"

state: dict[str, Any] = {}


def key_of(request: Request) -> str | None:
    sid = request.cookies.get("session")
    return hashlib.sha256(sid.encode()).hexdigest() if sid else None


async def load(key: str) -> dict[str, Any] | None:
    async with state["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(SELECT, (key, int(time.time())))
        row = await cur.fetchone()
    return None if row is None else msgpack.unpackb(row[0], raw=False)  # type: ignore[no-any-return]


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    key = key_of(request)
    data = await load(key) if key else None
    if data is None:
        return DENIED
    return JSONResponse({"user_id": data["user_id"]})


async def write(request: Request) -> Response:
    key = key_of(request)
    data = await load(key) if key else None
    if key is None or data is None:
        return DENIED
    data["counter"] = data.get("counter", 0) + 1
    async with state["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(UPSERT, (key, msgpack.packb(data), int(time.time()) + LIFETIME))
    response = JSONResponse({"counter": data["counter"]})
    response.headers.append("set-cookie", COOKIE.format(request.cookies["session"], LIFETIME))
    return response


async def skip(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def login(request: Request) -> Response:
    sid = secrets.token_urlsafe(32)
    now = int(time.time())
    data = {
        "user_id": 1,
        "name": "new-user",
        "roles": ["reader", "writer"],
        "csrf": secrets.token_hex(16),
        "counter": 0,
    }
    async with state["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            INSERT, (hashlib.sha256(sid.encode()).hexdigest(), msgpack.packb(data), now + LIFETIME, now)
        )
    response = JSONResponse({"user_id": 1})
    response.headers.append("set-cookie", COOKIE.format(sid, LIFETIME))
    return response


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    parts = urlsplit(URL)
    pool = await aiomysql.create_pool(
        minsize=POOL,
        maxsize=POOL,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        db=unquote(parts.path.lstrip("/")),
        autocommit=True,
        client_flag=CLIENT.FOUND_ROWS,
        charset="utf8mb4",
    )
    state["pool"] = pool
    yield
    pool.close()
    await pool.wait_closed()


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/read", read),
        Route("/write", write),
        Route("/skip", skip),
        Route("/login", login),
    ],
    lifespan=lifespan,
)
