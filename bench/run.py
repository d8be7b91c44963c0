"""`make bench`: asgi_mysql_session against a raw-aiomysql limit and a no-database reference.

Three apps run under uvicorn (1 worker, uvloop, httptools, identical flags), each in its own
process; wrk (installed from Debian's packages when missing) drives them from another
process. For each workload the apps are interleaved A B C, A B C... over R rounds and the
medians are reported, with the database statements per request taken from the server's own
Com_* counters. Then two scenarios: a sweep of 1,000,000 expired rows under the read load,
and read throughput with 10,000 vs 1,000,000 live sessions. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filldb import BenchTable, signed_cookies, unique_table_name
from lib import BENCH, MYSQL_URL, ROOT
from lib.apps import APP_MODULES, Server
from lib.console import Progress, StatusLine, say
from lib.cpumeter import BUSY, CpuMeter
from lib.http import fetch
from lib.load import Driver, Load, ensure_wrk, summarize
from lib.report import git_revision, machine, package_versions
from run_report import report

RESULTS = BENCH / "results"
WORKLOADS = ("read", "write", "skip", "login")
#: Before a run, wait until other processes use less than this.
QUIET_LIMIT = 0.15
#: The versions the results name.
PACKAGES = ["asgi_mysql_session", "starlette", "uvicorn", "uvloop", "httptools", "aiomysql", "PyMySQL"]
PACKAGES += ["msgpack", "itsdangerous"]


@dataclass
class Config:
    url: str
    table: str
    sessions: int
    rounds: int
    duration: float
    warmup: float
    connections: int
    threads: int
    pool: int
    apps: list[str]
    workloads: list[str]
    sweep_rows: int
    scale_small: int
    scale_big: int
    port: int
    quick: bool
    retries: int
    quiet_wait: float
    sweep_batch: int
    keep_table: bool = False
    session: str = "login"
    coalesce: bool = True
    workers: int = 1


class Bench:
    def __init__(self, config: Config, wrk: str | None) -> None:
        self.config = config
        RESULTS.mkdir(exist_ok=True)
        self.table = BenchTable(config.url, config.table)
        self.driver = Driver(wrk, config.connections, config.threads, self.table)
        self.env = env = dict(
            os.environ,
            BENCH_MYSQL_URL=config.url,
            BENCH_TABLE=config.table,
            BENCH_POOL=str(config.pool),
            BENCH_SESSION=config.session,
            BENCH_COALESCE="1" if config.coalesce else "0",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        self.servers = {
            name: Server(name, config.port + i, env, RESULTS, workers=config.workers)
            for i, name in enumerate(config.apps)
        }
        #: The scale scenario's big table and its servers (made only for that scenario).
        self.big_table: BenchTable | None = None
        self.big_servers: dict[str, Server] = {}
        self.ids_file = RESULTS / "ids.tmp"
        self.cookies_file = RESULTS / "cookies.tmp"
        self.cells: list[dict[str, Any]] = []
        self.rounds_served = 0
        cell = config.warmup + config.duration + 1.5
        fill_rate = 50_000.0  # rows/s, corrected once the first fill is timed
        self.fill_rate = fill_rate
        planned = len(config.apps) * len(config.workloads) * config.rounds * cell
        if config.sweep_rows:
            planned += config.sweep_rows / fill_rate + 2 * cell + config.sweep_rows / 40_000
        if config.scale_big:
            planned += config.scale_big / fill_rate + 4 * config.rounds * cell
        self.progress = Progress(planned + config.sessions / fill_rate)

    def cookies_for(self, app: str) -> Path:
        return self.cookies_file if app == "cookie" else self.ids_file

    def fill(self, count: int, label: str, table: BenchTable | None = None, **kwargs: Any) -> list[str]:
        started = time.monotonic()
        last = [0.0]

        def progress(done: int) -> None:
            if time.monotonic() - last[0] > 0.5:
                last[0] = time.monotonic()
                StatusLine.show(f"    {label}: {done:,}/{count:,} rows")

        self.progress.step(f"fill: {label} ({count:,} rows)", count / self.fill_rate)
        ids = (table or self.table).fill(count, progress=progress, **kwargs)
        took = time.monotonic() - started
        if count >= 10_000:
            self.fill_rate = count / took
        say(f"    {count:,} rows in {took:.1f}s")
        return ids

    def measure(
        self,
        app: str,
        path: str,
        cookies: Path | None,
        label: str,
        seconds: float | None = None,
        server: Server | None = None,
    ) -> Load:
        """Warm up, then measure; a run disturbed by other processes is repeated (best kept)."""
        server = server or self.servers[app]
        seconds = seconds or self.config.duration
        best: Load | None = None
        for attempt in range(1, self.config.retries + 2):
            tick = self.progress.step(label, self.config.warmup + seconds + 1.5)
            waited = self.wait_quiet()
            if self.config.warmup:
                self.driver.run(server, path, cookies, self.config.warmup)
            load, _ = self.driver.run(server, path, cookies, seconds, tick=tick)
            load.attempts, load.waited = attempt, waited
            if best is None or load.other_cpu < best.other_cpu:
                best = load
            if not load.disturbed:
                break
            say(f"    other processes used {load.other_cpu:.2f} cores during the run: disturbed")
            if attempt <= self.config.retries:
                label = label.split(" (")[0] + f" (again, {attempt + 1}/{self.config.retries + 1})"
        assert best is not None
        return best

    def wait_quiet(self) -> float:
        """Wait (up to --quiet-wait s) until other processes leave the CPUs nearly idle."""
        if self.config.quiet_wait <= 0:
            return 0.0
        started = time.monotonic()
        ours = [pid for s in self.all_servers() for pid in s.pids()]
        while True:
            meter = CpuMeter({"ours": ours})
            time.sleep(0.5)
            used = meter.cores()
            other = max(0.0, used[BUSY] - used["ours"])
            waited = time.monotonic() - started
            if other < QUIET_LIMIT or waited >= self.config.quiet_wait:
                if waited > 1:
                    say(
                        f"    waited {waited:.0f}s for other processes to quiet down ({other:.2f} cores busy)"
                    )
                return waited

    # -- phases ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        c = self.config
        self.table.create()
        ids = self.fill(c.sessions, "live sessions", ids_file=self.ids_file)
        if "cookie" in c.apps:
            signed_cookies(ids, "bench-secret", self.cookies_file)
        for server in self.servers.values():
            server.start()
        self.check_apps()
        matrix = self.matrix()
        sweep = self.sweep() if c.sweep_rows and "project" in c.apps else None
        scale = self.scale() if c.scale_big and "project" in c.apps else None
        return {
            "matrix": matrix,
            "sweep": sweep,
            "scale": scale,
            "coalesce": c.coalesce,
            "session": c.session,
        }

    def all_servers(self) -> list[Server]:
        return [*self.servers.values(), *self.big_servers.values()]

    def fresh_servers(self) -> None:
        """Start every round with new server processes.

        The same code runs faster or slower in one process than in another (memory layout,
        where the scheduler puts it and its database threads) and keeps that bias for the
        process's life: two copies of the raw app, each kept running over 10 rounds, differed
        by 5-9 %. New processes each round turn that bias into noise the medians absorb.
        """
        if self.rounds_served:
            for server in self.all_servers():
                server.stop()
            for server in self.all_servers():
                server.start()
        self.rounds_served += 1

    def check_apps(self) -> None:
        """Each app answers each workload once, before anything is timed."""
        one = self.ids_file.read_text().split("\n", 1)[0]
        first = {"project": one, "lean": one, "raw": one}
        if self.cookies_file.exists():
            first["cookie"] = self.cookies_file.read_text().split("\n", 1)[0]
        for app, server in self.servers.items():
            for workload in self.config.workloads:
                cookie = {} if workload == "login" else {"Cookie": f"session={first[app]}"}
                status, _, _ = fetch(server.port, "/" + workload, headers=cookie)
                if status >= 400:
                    raise SystemExit(f"bench: {app} /{workload} answered {status}")
        self.table.cleanup_new_rows()

    def matrix(self) -> dict[str, Any]:
        c = self.config
        say(f"\nworkloads x apps: {c.rounds} round(s) of {c.duration:g}s each (+{c.warmup:g}s warm-up)")
        results: dict[str, dict[str, list[Load]]] = {w: {a: [] for a in c.apps} for w in c.workloads}
        for workload in c.workloads:
            for rnd in range(1, c.rounds + 1):
                self.fresh_servers()
                for app in c.apps:
                    cookies = None if workload == "login" else self.cookies_for(app)
                    load = self.measure(
                        app, f"/{workload}", cookies, f"{workload:<5} {app:<7} round {rnd}/{c.rounds}"
                    )
                    results[workload][app].append(load)
                    self.cells.append({"workload": workload, "app": app, "round": rnd, **load.as_dict()})
                    if workload == "login":
                        self.table.cleanup_new_rows()
        return {w: {a: summarize(loads) for a, loads in apps.items()} for w, apps in results.items()}

    def sweep(self) -> dict[str, Any]:
        c = self.config
        say(f"\nsweep: {c.sweep_rows:,} expired rows swept while the read workload runs")
        self.fill(c.sweep_rows, "expired rows", expired=True)
        quiet = self.measure("project", "/read", self.ids_file, "read  project quiet (expired rows present)")
        server = self.servers["project"]

        def sweep_now() -> dict[str, Any]:
            time.sleep(1.0)  # the load is running before the sweep starts
            query = f"?batch={c.sweep_batch}" if c.sweep_batch else ""
            status, _, body = fetch(server.port, "/_bench/sweep" + query, method="POST", timeout=1800)
            if status != 200:
                raise RuntimeError(f"bench: POST /_bench/sweep answered {status}: {body[:200]!r}")
            result: dict[str, Any] = json.loads(body)
            return result

        tick = self.progress.step("read  project during the sweep", c.sweep_rows / 40_000)
        during, swept = self.driver.run(server, "/read", self.ids_file, 3600, until=sweep_now, tick=tick)
        rows, seconds = int(swept["rows"] or 0), float(swept["seconds"])
        say(f"    swept {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s)")
        left = self.table.count()
        return {
            "expired_rows": c.sweep_rows,
            "live_rows": c.sessions,
            "batch_size": swept["batch"],
            "rows_deleted": rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if seconds else None,
            "rows_left": left,
            "quiet": quiet.as_dict(),
            "during": during.as_dict(),
            "p99_ratio": round(during.p99_ms / quiet.p99_ms, 3) if quiet.p99_ms else None,
        }

    def scale(self) -> dict[str, Any]:
        """Read from a table of ``scale_small`` sessions and from one of ``scale_big``, in turns.

        Both tables exist side by side, each served by its own processes, and every round
        measures both: the machine's speed drifts over minutes, and measuring all small
        rounds before all big ones would count that drift as the table's size.
        """
        c = self.config
        apps = [a for a in ("project", "lean") if a in c.apps]
        say(f"\nscale: read with {c.scale_small:,} vs {c.scale_big:,} live sessions, in turns")
        self.table.truncate()
        files = {"small": RESULTS / "ids-small.tmp", "big": RESULTS / "ids-big.tmp"}
        self.fill(c.scale_small, "live sessions, small table", ids_file=files["small"])
        big = self.big_table = BenchTable(c.url, f"{c.table}_big")
        big.create()
        self.fill(c.scale_big, "live sessions, big table", table=big, ids_file=files["big"])
        env = dict(self.env, BENCH_TABLE=big.table)
        port = c.port + len(self.servers)
        self.big_servers = {
            app: Server(app, port + i, env, RESULTS, "-big", workers=self.config.workers)
            for i, app in enumerate(apps)
        }
        for server in self.big_servers.values():
            server.start()
        servers = {"small": self.servers, "big": self.big_servers}
        counts = {"small": c.scale_small, "big": c.scale_big}
        loads: dict[str, dict[str, list[Load]]] = {a: {"small": [], "big": []} for a in apps}
        for rnd in range(1, c.rounds + 1):
            self.fresh_servers()
            for app in apps:
                for size in ("small", "big") if rnd % 2 else ("big", "small"):
                    label = f"read  {app:<7} {counts[size]:>9,} sessions round {rnd}/{c.rounds}"
                    server = servers[size][app]
                    loads[app][size].append(self.measure(app, "/read", files[size], label, server=server))
        out: dict[str, Any] = {"small": c.scale_small, "big": c.scale_big, "interleaved": True, "apps": {}}
        for app in apps:
            s, b = summarize(loads[app]["small"]), summarize(loads[app]["big"])
            out["apps"][app] = {"small": s, "big": b, "ratio": round(b["rps"] / s["rps"], 3)}
        return out

    def close(self) -> None:
        for server in self.all_servers():
            server.stop()
        for table in filter(None, (self.table, self.big_table)):
            if self.config.keep_table and table.owned:
                say(f"bench: kept table `{table.table}` (--keep-table)")
            else:
                with contextlib.suppress(Exception):
                    table.drop()  # only a table this run created
            table.close()
        for tmp in ("ids.tmp", "cookies.tmp", "ids-small.tmp", "ids-big.tmp"):
            (RESULTS / tmp).unlink(missing_ok=True)
        for server in self.all_servers():  # a start failure has already printed its log
            server.log_path.unlink(missing_ok=True)


def machine_info(table: BenchTable, driver: Driver) -> dict[str, Any]:
    versions = package_versions(PACKAGES)
    generator = driver.name
    if driver.wrk:
        with contextlib.suppress(OSError):
            head = subprocess.run([driver.wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
            generator = f"{head.split(' [')[0]}; {driver.name}"
    return {
        "revision": git_revision() or "unknown",
        **machine(),
        "mariadb": table.server_info(),
        "packages": versions,
        "load_generator": generator,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=10_000, help="live sessions pre-filled (default 10,000)")
    p.add_argument("--million", action="store_true", help="pre-fill 1,000,000 sessions instead")
    p.add_argument("--rounds", type=int, default=3, help="rounds of A B C interleaving (default 3)")
    p.add_argument("--duration", type=float, default=10, help="seconds per measured cell (default 10)")
    p.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each cell (default 2)")
    p.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: 2-core machines)")
    p.add_argument("--pool", type=int, default=10, help="aiomysql pool size of both DB apps (default 10)")
    p.add_argument("--apps", default="project,lean,raw,cookie", help="comma list of project,lean,raw,cookie")
    p.add_argument(
        "--session",
        choices=("login", "one", "cart"),
        default="login",
        help="pre-filled session: a realistic login session (default), one key, or an 8 KB cart",
    )
    p.add_argument("--no-coalesce", action="store_true", help="the project sends every read on its own")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes per app (default 1; CPU counts them all)",
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of read,write,skip,login")
    p.add_argument("--sweep-rows", type=int, default=1_000_000, help="expired rows to sweep (0: no sweep)")
    p.add_argument("--sweep-batch", type=int, default=0, help="sweep batch size (default: the provider's)")
    p.add_argument("--scale", type=int, default=1_000_000, help="big table of the scale scenario (0: skip)")
    p.add_argument("--scale-small", type=int, default=10_000, help="small table of the scale scenario")
    p.add_argument("--quick", action="store_true", help="~1 minute smoke run (1 round, small tables)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a run disturbed by other processes")
    p.add_argument("--quiet-wait", type=float, default=30, help="max seconds to wait for an idle machine")
    p.add_argument("--generator", choices=("auto", "wrk", "asyncio"), default="auto")
    p.add_argument("--port", type=int, default=8101, help="first of the ports the apps listen on")
    p.add_argument(
        "--table",
        help="table the run creates (default: a new asgi_mysql_session_bench_<random> each run); "
        "an existing table of that name is never used, emptied or dropped",
    )
    p.add_argument("--keep-table", action="store_true", help="do not drop the bench table at the end")
    p.add_argument("--report", type=Path, help="only print and redraw the report of a results JSON")
    p.add_argument("--out", type=Path, help="results file stem (default bench/results/results|quick)")
    a = p.parse_args(argv)
    if a.million:
        a.sessions = 1_000_000
    if a.quick:
        # A smoke run (about a minute): every cell runs once, briefly, and never waits for an
        # idle machine; its numbers show that everything works, not how fast.
        a.rounds, a.duration, a.warmup, a.retries, a.quiet_wait = 1, 1, 0.25, 0, 0
        a.sessions = min(a.sessions, 1_000)
        a.sweep_rows = min(a.sweep_rows, 50_000)
        a.scale, a.scale_small = min(a.scale, 50_000), min(a.scale_small, 1_000)
    apps = [x for x in a.apps.split(",") if x]
    workloads = [x for x in a.workloads.split(",") if x]
    if set(apps) - set(APP_MODULES) or set(workloads) - set(WORKLOADS):
        p.error("unknown app or workload")
    if a.scale and a.scale <= a.scale_small:
        p.error("--scale must be larger than --scale-small")
    a.out = a.out or RESULTS / ("quick" if a.quick else "results")
    return Config(
        url=MYSQL_URL,
        table=a.table or unique_table_name(),
        sessions=a.sessions,
        rounds=a.rounds,
        duration=a.duration,
        warmup=a.warmup,
        connections=a.connections,
        threads=a.threads,
        pool=a.pool,
        apps=apps,
        workloads=workloads,
        sweep_rows=a.sweep_rows,
        scale_small=a.scale_small,
        scale_big=a.scale,
        port=a.port,
        quick=a.quick,
        retries=a.retries,
        quiet_wait=a.quiet_wait,
        sweep_batch=a.sweep_batch,
        keep_table=a.keep_table,
        session=a.session,
        coalesce=not a.no_coalesce,
        workers=a.workers,
    ), a


def main(argv: list[str] | None = None) -> None:
    config, args = parse_args(argv)
    if args.report:
        path = args.report
        report(json.loads(path.read_text()), path.with_suffix(""), write_json=False)
        return
    wrk = None if args.generator == "asyncio" else ensure_wrk(allow_install=True)
    if wrk is None and args.generator == "wrk":
        raise SystemExit("bench: wrk is not available")
    if "cookie" in config.apps:
        try:
            import itsdangerous  # noqa: F401
        except ImportError:
            raise SystemExit("bench: the cookie reference needs itsdangerous (pip install it)") from None
    os.environ["BENCH_SESSION"] = config.session  # what this process fills the table with
    bench = Bench(config, wrk)
    info = machine_info(bench.table, bench.driver)
    say(
        f"asgi_mysql_session bench{' (quick)' if config.quick else ''}: {info['nproc']} x {info['cpu']}, "
        f"MariaDB {info['mariadb']['version']}, Python {info['python']}"
    )
    say(
        f"load: {info['load_generator']}; apps: {', '.join(config.apps)} on ports {config.port}..; "
        f"pool {config.pool}; table `{config.table}`"
    )
    if wrk is None:
        say("bench: WARNING: wrk unavailable, using the asyncio fallback (it may be the bottleneck)")
    try:
        results = bench.run()
    except KeyboardInterrupt:
        say("\nbench: interrupted")
        raise SystemExit(130) from None
    finally:
        bench.close()
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "config": config.__dict__,
        "results": results,
        "cells": bench.cells,
    }
    report(doc, args.out)


if __name__ == "__main__":
    main()
