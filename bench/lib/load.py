"""wrk (or bench/loadgen.py) against one bench app: what one run measured, and the medians of runs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lib import BENCH
from lib.apps import Server
from lib.console import say
from lib.cpumeter import BUSY, WAITED, CpuMeter
from lib.db import KINDS
from lib.stats import median

LUA = BENCH / "wrk" / "rotate.lua"
#: A run during which other processes used more CPU than this (in cores) is disturbed.
OTHER_LIMIT = 0.25


def ensure_wrk(allow_install: bool) -> str | None:
    """wrk's path; installed with apt-get (Debian's package) when missing and we are root."""
    found = shutil.which("wrk")
    if found or not allow_install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("bench: wrk is missing and cannot be installed here (needs root and apt-get)")
        return None
    say("bench: installing wrk from Debian's packages (apt-get install wrk)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("wrk")


@dataclass
class Load:
    """What one run of the load generator measured."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]
    statements: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0
    db_cpu: float = 0.0
    generator_cpu: float = 0.0
    other_cpu: float = 0.0
    attempts: int = 1
    waited: float = 0.0

    @property
    def disturbed(self) -> bool:
        return self.other_cpu > OTHER_LIMIT

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def per_request(self) -> dict[str, float]:
        return {k: self.statements.get(k, 0) / self.requests if self.requests else 0.0 for k in KINDS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "errors": self.errors,
            "statements": self.statements,
            "statements_per_request": {k: round(v, 4) for k, v in self.per_request().items()},
            # CPU used during the run, in cores (1.0 = one core busy the whole time).
            "cpu_cores": {
                "server": round(self.server_cpu, 3),
                "mariadb": round(self.db_cpu, 3),
                "load_generator": round(self.generator_cpu, 3),
                "other": round(self.other_cpu, 3),
            },
            "disturbed": self.disturbed,
            "attempts": self.attempts,
            "waited_for_quiet_s": round(self.waited, 1),
        }


class Database(Protocol):
    """What a Driver reads around a run: the statements counted, and which processes serve them."""

    def counters(self) -> dict[str, int]:
        """Com_select ... Com_delete so far, by kind (lib.db.KINDS)."""
        ...

    def server_pids(self) -> list[int]:
        """The database server processes on this machine, for their CPU (none: not measured)."""
        ...


class Driver:
    """Runs wrk (or the asyncio fallback) against a server and takes the server-side counters."""

    def __init__(self, wrk: str | None, connections: int, threads: int, database: Database) -> None:
        self.wrk = wrk
        self.connections = connections
        self.threads = threads
        self.database = database
        self.db_pids = database.server_pids()

    @property
    def name(self) -> str:
        if self.wrk:
            return f"wrk -t{self.threads} -c{self.connections} (Lua cookie rotation)"
        return f"bench/loadgen.py asyncio fallback, {self.connections} connections"

    def command(self, server: Server, path: str, cookies: Path | None, seconds: float) -> list[str]:
        file = str(cookies) if cookies else "-"
        if self.wrk:
            return [
                self.wrk, f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "10s", "-s", str(LUA), server.url, "--", path, file, str(self.threads),
            ]  # fmt: skip
        loadgen = str(BENCH / "loadgen.py")
        return [sys.executable, loadgen, server.url, path, file, str(self.connections), str(seconds)]

    def run(
        self,
        server: Server,
        path: str,
        cookies: Path | None,
        seconds: float,
        *,
        until: Callable[[], Any] | None = None,
        tick: Callable[[float], None] | None = None,
    ) -> tuple[Load, Any]:
        """One measured run. With ``until``, the run lasts while ``until()`` runs (SIGINT after)."""
        before = self.database.counters()
        meter = CpuMeter({"server": server.pids(), "mariadb": self.db_pids})
        started = time.monotonic()
        proc = subprocess.Popen(
            self.command(server, path, cookies, seconds), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        extra = None
        if until is not None:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                future = pool.submit(until)
                try:
                    while not future.done():
                        with contextlib.suppress(concurrent.futures.TimeoutError):
                            future.result(timeout=1)
                        if tick is not None:
                            tick(time.monotonic() - started)
                    extra = future.result()
                finally:
                    proc.send_signal(signal.SIGINT)
        while True:
            try:
                out, err = proc.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                if tick is not None:
                    tick(time.monotonic() - started)
        used = meter.cores()
        after = self.database.counters()
        line = next((x for x in out.decode().splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            raise SystemExit(f"bench: the load generator failed:\n{out.decode()}\n{err.decode()}")
        data = json.loads(line[len("WRKJSON ") :])
        lat = data["latency_us"]
        load = Load(
            requests=int(data["requests"]),
            seconds=data["duration_us"] / 1e6,
            p50_ms=lat["p50"] / 1000,
            p90_ms=lat["p90"] / 1000,
            p99_ms=lat["p99"] / 1000,
            p999_ms=lat["p999"] / 1000,
            max_ms=lat["max"] / 1000,
            errors={k: int(v) for k, v in data["errors"].items()},
            statements={k: after[k] - before[k] for k in KINDS},
            server_cpu=used["server"],
            db_cpu=used["mariadb"],
            generator_cpu=used[WAITED],
            other_cpu=max(0.0, used[BUSY] - used["server"] - used["mariadb"] - used[WAITED]),
        )
        return load, extra


def summarize(loads: list[Load]) -> dict[str, Any]:
    """Medians over the rounds (errors and requests are summed), and each round's req/s and p99."""

    def med(values: Iterable[float]) -> float:
        return median(values, digits=3)

    return {
        "rounds": len(loads),
        "rps": med(x.rps for x in loads),
        "p50_ms": med(x.p50_ms for x in loads),
        "p99_ms": med(x.p99_ms for x in loads),
        "statements_per_request": {k: med(x.per_request()[k] for x in loads) for k in KINDS},
        "errors": sum(x.error_count for x in loads),
        "requests": sum(x.requests for x in loads),
        "cpu_cores": {
            "server": med(x.server_cpu for x in loads),
            "mariadb": med(x.db_cpu for x in loads),
            "load_generator": med(x.generator_cpu for x in loads),
            "other": med(x.other_cpu for x in loads),
        },
        # mariadbd CPU (utime + stime from /proc) per 1,000 requests, in ms: what the shared
        # server spends on the app's statements (other clients' statements included).
        "db_ms_per_1000": med(1e6 * x.db_cpu * x.seconds / x.requests if x.requests else 0.0 for x in loads),
        "disturbed_rounds": sum(x.disturbed for x in loads),
        "rps_rounds": [round(x.rps, 1) for x in loads],
        "p99_rounds": [x.p99_ms for x in loads],
    }
