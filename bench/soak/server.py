"""The soak app under uvicorn, and the options both soaks give it and its users.

``start_app`` serves bench/soak/app.py on a free port of 127.0.0.1 with its provider on a
DSN (through the fault proxy, or the cluster's hosts) and returns once every worker
answered ``/ping``; ``add_arguments`` adds the options both soak scripts share.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lib.procs import Process, free_port, uvicorn, wait_ready
from users import KEEP_ALIVE

HERE = Path(__file__).resolve().parent


def add_arguments(p: argparse.ArgumentParser, *, table: str, pool: str) -> None:
    """The users' pace, the app's provider, the table, and what is kept after the run."""
    p.add_argument(
        "--think",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(1.0, 3.0),
        help="seconds a user waits between requests, uniform (default 1 3)",
    )
    p.add_argument("--gc-interval", type=float, default=5.0, help="sweep interval in s (default 5)")
    p.add_argument("--db-timeout", type=float, default=2.0, help="provider timeout in s (default 2)")
    p.add_argument("--connect-timeout", type=float, default=1.0, help="connect timeout in s (default 1)")
    p.add_argument("--pool-max", type=int, default=10, help=f"aiomysql pool size {pool} (default 10)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="client timeout in s (default 30)")
    p.add_argument("--table", default=table, help="table to create, use and drop")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the table(s) and the log directory")


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.table.startswith("soak"):
        p.error("--table must start with 'soak': the soak drops it at the end")
    if args.think[0] < 0 or args.think[1] < args.think[0]:
        p.error("--think MIN MAX with 0 <= MIN <= MAX")


def dsn_options(args: argparse.Namespace) -> str:
    """The provider's options in the app's DSN: short timeouts, a pool of ``--pool-max``."""
    return (
        f"connect_timeout={args.connect_timeout:g}&timeout={args.db_timeout:g}"
        f"&pool_min=1&pool_max={args.pool_max}"
    )


def start_app(
    name: str, dsn: str, args: argparse.Namespace, log: Path, *, workers: int = 1, serialize: bool = False
) -> tuple[Process, int, set[str]]:
    """uvicorn serving app.py, its provider on ``dsn``: the process, its port, the worker PIDs that
    answered /ping within 30 s (none: it did not come up)."""
    port = free_port()
    env = {
        **os.environ,
        "SOAK_MYSQL_URL": dsn,
        "SOAK_TABLE": args.table,
        "SOAK_MAX_LIFETIME": str(args.max_lifetime),
        "SOAK_GC_INTERVAL": str(args.gc_interval),
        "SOAK_SERIALIZE": "1" if serialize else "",
    }
    options = ("--timeout-graceful-shutdown", "10", "--timeout-keep-alive", str(KEEP_ALIVE))
    command = uvicorn("app:app", HERE, port, workers=workers, options=options)
    proc = Process(name, command, log, env=env)
    return proc, port, wait_ready(proc, port, "/ping", workers=workers)
