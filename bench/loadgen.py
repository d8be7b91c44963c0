"""Fallback load generator (used only when wrk is unavailable): asyncio + uvloop, keep-alive.

Same contract as bench/wrk/rotate.lua: ``loadgen.py URL PATH FILE CONNECTIONS SECONDS`` sends
GET PATH on CONNECTIONS keep-alive connections for SECONDS (or until SIGINT), rotating the
cookie over FILE's lines ("-" for none), and prints one ``WRKJSON {...}`` line. It is much
slower than wrk, so on a small machine it can become the bottleneck: results say which
generator produced them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from lib import run_async
from lib.stats import percentile


async def worker(
    host: str,
    port: int,
    requests: list[bytes],
    turn: Iterator[int],
    deadline: list[float],
    latencies: list[float],
    errors: dict[str, int],
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        errors["connect"] += 1
        return
    try:
        while time.perf_counter() < deadline[0]:
            # One rotation shared by all connections (as wrk's single thread does), so two
            # requests in flight never carry the same cookie while there are more ids.
            request = requests[next(turn) % len(requests)]
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status > 399:
                errors["status"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors["read"] += 1
    finally:
        writer.close()


def build_requests(host: str, port: int, path: str, file: str) -> list[bytes]:
    base = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if file == "-":
        return [(base + "\r\n").encode()]
    return [(base + f"Cookie: session={line}\r\n\r\n").encode() for line in Path(file).read_text().split()]


async def main(host: str, port: int, requests: list[bytes], connections: int, seconds: float) -> None:
    started = time.perf_counter()
    deadline = [started + seconds]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: deadline.__setitem__(0, 0.0))
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    turn = itertools.count()
    await asyncio.gather(
        *(worker(host, port, requests, turn, deadline, latencies, errors) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    us = sorted(v * 1e6 for v in latencies)
    result = {
        "requests": len(us),
        "duration_us": int(elapsed * 1e6),
        "bytes": 0,
        "errors": errors,
        "latency_us": {
            "mean": sum(us) / len(us) if us else 0.0,
            # wrk's rank (lib.stats.percentile), 0 without a request as wrk gives.
            "p50": percentile(us, 50, empty=0.0),
            "p90": percentile(us, 90, empty=0.0),
            "p99": percentile(us, 99, empty=0.0),
            "p999": percentile(us, 99.9, empty=0.0),
            "max": us[-1] if us else 0.0,
        },
    }
    print("WRKJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    url, path, file, connections, seconds = sys.argv[1:6]
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    run_async(main(host, port, build_requests(host, port, path, file), int(connections), float(seconds)))
