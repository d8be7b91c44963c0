"""The mirrored limit: the same SQL per request with raw aiomysql, msgpack and no session library.

read: one SELECT by the SHA-256 of the cookie with the expiry check; write: that SELECT and a
version-checked UPDATE; login: one INSERT of a new random id; skip: nothing. Same pool size,
same connection options and the same statements (text included) as the provider uses.
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

SELECT = (
    "SELECT session_data, session_expiry, session_version, session_created, session_owner "
    f"FROM `{TABLE}` WHERE session_key = %s AND session_expiry > %s"
)
UPDATE = (
    f"UPDATE `{TABLE}` SET session_data = %s, session_expiry = %s, session_owner = %s, "
    "session_version = session_version + 1 "
    "WHERE session_key = %s AND session_version = %s AND session_expiry > %s"
)
INSERT = (
    f"INSERT INTO `{TABLE}` (session_key, session_data, session_expiry, session_version, "
    "session_created, session_owner) VALUES (%s, %s, %s, 1, %s, %s)"
)
COOKIE = "session={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}"

state: dict[str, Any] = {}


def key_of(request: Request) -> str | None:
    sid = request.cookies.get("session")
    return hashlib.sha256(sid.encode()).hexdigest() if sid else None


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    key = key_of(request)
    if key is None:
        return DENIED
    async with state["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(SELECT, (key, int(time.time())))
        row = await cur.fetchone()
    if row is None:
        return DENIED
    data = msgpack.unpackb(row[0], raw=False)
    return JSONResponse({"user_id": data["user_id"]})


async def write(request: Request) -> Response:
    key = key_of(request)
    if key is None:
        return DENIED
    async with state["pool"].acquire() as conn, conn.cursor() as cur:
        now = int(time.time())
        await cur.execute(SELECT, (key, now))
        row = await cur.fetchone()
        if row is None:
            return DENIED
        data = msgpack.unpackb(row[0], raw=False)
        data["counter"] = data.get("counter", 0) + 1
        raw = msgpack.packb(data, use_bin_type=True)
        await cur.execute(UPDATE, (raw, now + LIFETIME, row[4], key, row[2], now))
        if cur.rowcount != 1:
            return PlainTextResponse("conflict", status_code=409)
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
    raw = msgpack.packb(data, use_bin_type=True)
    async with state["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(INSERT, (hashlib.sha256(sid.encode()).hexdigest(), raw, now + LIFETIME, now, None))
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
