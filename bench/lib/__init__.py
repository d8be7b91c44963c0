"""The plumbing the bench scripts share, one module a job (bench/README.md, "Layout").

    procs     start a child process, wait until it answers, stop it by PID, keep its log
    cpumeter  CPU seconds of processes (/proc/<pid>/stat), of the machine, in cores between two readings
    db        the bench's own SQL connections, the server's Com_* counters, the server's PID
    stats     the one percentile definition, medians, medians of per-round ratios
    console   say(), durations, the status line and countdown of a long run
    report    text and Markdown tables, package versions, the git revision, the machine
    http      a keep-alive HTTP/1.1 client on asyncio streams, a blocking one-shot request
    apps      the bench apps (bench/apps) under uvicorn, one process each
    load      wrk (or bench/loadgen.py) against one of them: what a run measured, medians of runs

The scripts in bench/ import it as ``lib`` (bench/ is their ``sys.path[0]``); those in
bench/soak put bench/ on ``sys.path`` first. This module holds what every one of them reads:
where things are, the default DSN, and the event loop they run coroutines on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
#: The server of ``make test``; every script takes ``MYSQL_URL`` from the environment.
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to the end on uvloop (as uvicorn does here), or on asyncio without it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
