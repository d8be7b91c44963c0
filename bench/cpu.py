"""CPU time per request of the bench apps, called in-process (no HTTP server, no load generator).

    .venv/bin/python bench/cpu.py                      # every app and workload
    .venv/bin/python bench/cpu.py --apps project --workloads read --profile

Each app's ASGI callable is driven directly (lifespan included) by 10 concurrent tasks
against the real database; ``time.process_time()`` over the measured requests gives the
Python CPU the app spends per request, the number that bounds req/s when one uvicorn worker
saturates its core (uvicorn itself adds about 33 us per request on top). ``--profile``
runs cProfile over the same requests and prints the functions with the most own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import os
import pstats
import statistics
import sys
import time
from typing import Any

from filldb import BenchTable, signed_cookies, unique_table_name
from lib import BENCH, MYSQL_URL, run_async
from lib.apps import APP_MODULES, APPS

sys.path.insert(0, str(APPS))


async def lifespan(app: Any, event: str, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]) -> None:
    await inbox.put({"type": f"lifespan.{event}"})
    message = await outbox.get()
    if not message["type"].endswith(".complete"):
        raise SystemExit(f"lifespan {event} failed: {message}")


async def drive(app: Any, path: str, cookies: list[str], count: int, concurrency: int) -> None:
    async def one(i: int) -> None:
        headers = [(b"host", b"bench")]
        if cookies:
            headers.append((b"cookie", b"session=" + cookies[i % len(cookies)].encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80), "state": {},
        }  # fmt: skip
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise SystemExit(f"{path} answered {status}")

    async def worker(k: int) -> None:
        for i in range(k, count, concurrency):
            await one(i)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))


async def measure(app_name: str, workload: str, ids: list[str], cookies: list[str], args: Any) -> float:
    app = importlib.import_module(APP_MODULES[app_name]).app
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()

    async def receive() -> Any:
        return await inbox.get()

    async def send(message: Any) -> None:
        await outbox.put(message)

    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    )
    await lifespan(app, "startup", inbox, outbox)
    jar = [] if workload == "login" else (cookies if app_name == "cookie" else ids)
    path = f"/{workload}"
    await drive(app, path, jar, 1000, args.concurrency)  # warm-up
    profiler = cProfile.Profile() if args.profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    await drive(app, path, jar, args.requests, args.concurrency)
    if profiler:
        profiler.disable()
    used = time.process_time() - started
    await lifespan(app, "shutdown", inbox, outbox)
    await task
    if profiler:
        print(f"--- {app_name} {workload}: functions by own time (cProfile inflates small calls)")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return float(1e6 * used / args.requests)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", default="project,lean")
    p.add_argument("--workloads", default="read,write,login,skip")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--table", help="table to create (default: a new asgi_mysql_session_bench_<random>)")
    args = p.parse_args()
    args.table = args.table or unique_table_name()
    os.environ.setdefault("BENCH_TABLE", args.table)
    table = BenchTable(MYSQL_URL, args.table)
    try:
        table.create()
        ids = table.fill(1_000)
        cookie_file = BENCH / "results" / "cpu-cookies.tmp"
        signed_cookies(ids, "bench-secret", cookie_file)
        cookies = cookie_file.read_text().split()
        cookie_file.unlink()
        for workload in args.workloads.split(","):
            for app_name in args.apps.split(","):
                runs = [
                    run_async(measure(app_name, workload, ids, cookies, args))
                    for _ in range(1 if args.profile else args.repeat)
                ]
                table.cleanup_new_rows()
                print(
                    f"{workload:<6} {app_name:<8} {statistics.median(runs):7.1f} us CPU/request "
                    f"(runs: {', '.join(f'{r:.1f}' for r in runs)})",
                    flush=True,
                )
    finally:
        table.drop()
        table.close()


if __name__ == "__main__":
    main()
