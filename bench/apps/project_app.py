"""The project under test: Starlette + asgi_mysql_session's SessionMiddleware.

Configured from the environment by bench/run.py so that all three apps share one set of
server flags: BENCH_MYSQL_URL, BENCH_TABLE, BENCH_POOL (aiomysql pool size).
The skip route (and the bench's own admin route) are in ``exclude_paths``: in eager mode a
presented cookie is otherwise read even by a route that never touches the session.
"""

from __future__ import annotations

import os
import secrets
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from asgi_mysql_session import MySQLSessionProvider, SessionMiddleware, regenerate_session

URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TABLE = os.environ.get("BENCH_TABLE", "bench_session")
POOL = int(os.environ.get("BENCH_POOL", "10"))
DENIED = PlainTextResponse("no session", status_code=403)

provider = MySQLSessionProvider(
    f"{URL}{'&' if '?' in URL else '?'}pool_min={POOL}&pool_max={POOL}",
    table=TABLE,
    # Long lifetimes keep the rolling-expiry touch (one UPDATE per session per touch_after,
    # here 2.4 h) out of a run: the read workload then measures reads only.
    max_lifetime=86400,
    absolute_lifetime=None,
    gc_interval=None,  # sweeps run only when the bench asks (/_bench/sweep)
    # BENCH_COALESCE=0 sends every read on its own (run.py --no-coalesce), to compare.
    coalesce_reads=os.environ.get("BENCH_COALESCE", "1") != "0",
)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    user = request.session.get("user_id")
    if user is None:  # the load generator counts 4xx as errors: a wrong cookie cannot pass
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
    await regenerate_session(request)  # what a real login does; free for a new session
    return JSONResponse({"user_id": 1})


async def sweep(request: Request) -> Response:
    """Run one sweep in this process, sharing the event loop and pool with the requests."""
    batch = int(request.query_params.get("batch", provider.gc_batch_size))
    started = time.perf_counter()
    rows = await provider.sweep(batch_size=batch, exclusive=True)
    return JSONResponse({"rows": rows, "seconds": time.perf_counter() - started, "batch": batch})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/read", read),
        Route("/write", write),
        Route("/skip", skip),
        Route("/login", login),
        Route("/_bench/sweep", sweep, methods=["POST"]),
    ]
)
app.add_middleware(SessionMiddleware, provider=provider, exclude_paths=["/skip", "/health", "/_bench"])
