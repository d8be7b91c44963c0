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
import concurrent.futures
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from filldb import BenchTable, signed_cookies, unique_table_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
LUA = HERE / "wrk" / "rotate.lua"
RESULTS = HERE / "results"
TICK = os.sysconf("SC_CLK_TCK")

WORKLOADS = ("read", "write", "skip", "login")
APP_MODULES = {"project": "project_app", "lean": "lean_app", "raw": "raw_app", "cookie": "cookie_app"}
APP_TITLES = {
    "project": "asgi_mysql_session",
    "lean": "hand-written aiomysql (reference)",
    "raw": "raw aiomysql, the package's SQL",
    "cookie": "Starlette signed cookie",
}
#: The req/s the project must reach, as a share of the lean hand-written app's (issue 15).
LEAN_TARGETS = {"read": 1.0, "write": 0.95, "login": 0.95, "skip": 1.0}
#: The statements per request the project must stay within (SHOW GLOBAL STATUS deltas).
BUDGET = {
    "read": {"select": 1, "insert": 0, "update": 0, "delete": 0},
    "write": {"select": 1, "insert": 0, "update": 1, "delete": 0},
    "login": {"select": 0, "insert": 1, "update": 0, "delete": 0},
    "skip": {"select": 0, "insert": 0, "update": 0, "delete": 0},
}
KINDS = ("select", "insert", "update", "delete")
#: A run during which other processes used more CPU than this (in cores) is run again.
OTHER_LIMIT = 0.25
#: Before a run, wait until other processes use less than this.
QUIET_LIMIT = 0.15


def say(message: str = "") -> None:
    Progress.clear_line()
    print(message, flush=True)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# -- processes and CPU -----------------------------------------------------------------------


def proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def find_pid(name: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    return int(entry.name)
    return None


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (for the 'other load' column)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    """One uvicorn process serving one of bench/apps, with the same flags for every app."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_dir: Path, tag: str = "") -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_dir / f"server-{name}{tag}.log.tmp"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            f"{APP_MODULES[self.name]}:app",
            "--app-dir",
            str(APPS),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
        ]

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the {self.name} app exited:\n{self.log_path.read_text()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url + "/health", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise SystemExit(f"bench: the {self.name} app did not answer on {self.url}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- load generation -------------------------------------------------------------------------


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


class Driver:
    """Runs wrk (or the asyncio fallback) against a server and takes the server-side counters."""

    def __init__(self, wrk: str | None, connections: int, threads: int, table: BenchTable) -> None:
        self.wrk = wrk
        self.connections = connections
        self.threads = threads
        self.table = table
        self.db_pid = find_pid("mariadbd") or find_pid("mysqld")

    @property
    def name(self) -> str:
        if self.wrk:
            return f"wrk -t{self.threads} -c{self.connections} (Lua cookie rotation)"
        return f"bench/loadgen.py asyncio fallback, {self.connections} connections"

    def command(self, server: Server, path: str, cookies: Path | None, seconds: float) -> list[str]:
        file = str(cookies) if cookies else "-"
        if self.wrk:
            return [
                self.wrk,
                f"-t{self.threads}",
                f"-c{self.connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(LUA),
                server.url,
                "--",
                path,
                file,
                str(self.threads),
            ]
        return [
            sys.executable,
            str(HERE / "loadgen.py"),
            server.url,
            path,
            file,
            str(self.connections),
            str(seconds),
        ]

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
        before = self.table.counters()
        cpu0 = (proc_cpu(server.pid), proc_cpu(self.db_pid), children_cpu(), machine_busy())
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
        wall = time.monotonic() - started
        cpu1 = (proc_cpu(server.pid), proc_cpu(self.db_pid), children_cpu(), machine_busy())
        after = self.table.counters()
        line = next((x for x in out.decode().splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            raise SystemExit(f"bench: the load generator failed:\n{out.decode()}\n{err.decode()}")
        data = json.loads(line[len("WRKJSON ") :])
        lat = data["latency_us"]
        used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
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
            server_cpu=used[0] / wall,
            db_cpu=used[1] / wall,
            generator_cpu=used[2] / wall,
            other_cpu=max(0.0, used[3] - used[0] - used[1] - used[2]) / wall,
        )
        return load, extra


# -- progress ----------------------------------------------------------------------------------


class Progress:
    """One status line: which app, workload and round, and roughly how long is left."""

    tty = sys.stdout.isatty()
    shown = False

    def __init__(self, planned_seconds: float) -> None:
        self.left = planned_seconds
        self.started = time.monotonic()

    @classmethod
    def clear_line(cls) -> None:
        if cls.tty and cls.shown:
            sys.stdout.write("\r\033[K")
            cls.shown = False

    def step(self, label: str, seconds: float) -> Callable[[float], None]:
        """Announce a step of ``seconds`` planned; returns a ticker for the live countdown."""
        say(f"  {label:<46} ({fmt_duration(self.left)} left)")
        left_at_start = self.left
        self.left = max(0.0, self.left - seconds)

        def tick(elapsed: float) -> None:
            if Progress.tty:
                remaining = max(0.0, left_at_start - elapsed)
                sys.stdout.write(
                    f"\r\033[K    running {elapsed:4.0f}s ... about {fmt_duration(remaining)} left"
                )
                sys.stdout.flush()
                Progress.shown = True

        return tick

    def spend(self, seconds: float) -> None:
        self.left = max(0.0, self.left - seconds)


# -- the bench -------------------------------------------------------------------------------


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
            name: Server(name, config.port + i, env, RESULTS) for i, name in enumerate(config.apps)
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
            if Progress.tty and time.monotonic() - last[0] > 0.5:
                last[0] = time.monotonic()
                sys.stdout.write(f"\r\033[K    {label}: {done:,}/{count:,} rows")
                sys.stdout.flush()
                Progress.shown = True

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
        ours = [s.pid for s in self.all_servers()]
        while True:
            busy0, cpu0 = machine_busy(), sum(proc_cpu(p) for p in ours)
            time.sleep(0.5)
            other = max(0.0, machine_busy() - busy0 - (sum(proc_cpu(p) for p in ours) - cpu0)) / 0.5
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
                request = urllib.request.Request(server.url + "/" + workload)
                if workload != "login":
                    request.add_header("Cookie", f"session={first[app]}")
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        response.read()
                except urllib.error.HTTPError as exc:
                    raise SystemExit(f"bench: {app} /{workload} answered {exc.code}") from exc
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
            request = urllib.request.Request(server.url + "/_bench/sweep" + query, method="POST")
            with urllib.request.urlopen(request, timeout=1800) as response:
                result: dict[str, Any] = json.loads(response.read())
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
        self.big_servers = {app: Server(app, port + i, env, RESULTS, "-big") for i, app in enumerate(apps)}
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


def summarize(loads: list[Load]) -> dict[str, Any]:
    """Medians over the rounds (errors are summed)."""

    def med(values: Iterator[float]) -> float:
        return round(statistics.median(list(values)), 3)

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


# -- targets and report ------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    matrix = results["matrix"]
    for workload, apps in matrix.items():
        project, lean = apps.get("project"), apps.get("lean")
        if project is None:
            continue
        if lean is not None:
            want = LEAN_TARGETS[workload]
            pct = 100 * paired_ratio(project["rps_rounds"], lean["rps_rounds"])
            of_medians = 100 * project["rps"] / lean["rps"]
            out.append(
                {
                    "target": f"{workload}: req/s >= {want:.2f}x the hand-written app's",
                    "measured": f"{pct / 100:.3f}x (ratio of medians {of_medians / 100:.3f}x: "
                    f"{project['rps']:,.0f} vs {lean['rps']:,.0f})",
                    "met": pct >= 100 * want,
                }
            )
            if workload == "read" and results.get("coalesce", True):
                out.append(
                    {
                        "target": "read, coalesced: req/s >= 1.30x the hand-written app's",
                        "measured": f"{pct / 100:.3f}x",
                        "met": pct >= 130,
                    }
                )
            ratio = project["p99_ms"] / lean["p99_ms"]
            out.append(
                {
                    "target": f"{workload}: p99 <= 1.25x the hand-written app's",
                    "measured": f"{ratio:.2f}x ({project['p99_ms']:.1f} vs {lean['p99_ms']:.1f} ms)",
                    "met": ratio <= 1.25,
                }
            )
        per = project["statements_per_request"]
        budget = BUDGET[workload]
        shown = ", ".join(f"{per[k]:.2f} {k.upper()}" for k in KINDS if per[k] >= 0.005 or budget[k])
        want = " + ".join(f"{v} {k.upper()}" for k, v in budget.items() if v) or "0"
        note = " (skip route in exclude_paths)" if workload == "skip" else ""
        if workload in ("read", "write") and results.get("coalesce", True):
            # Coalesced reads: at most the budget, and below 0.5 SELECT per read at 32 connections.
            limit = 0.5 if workload == "read" else budget["select"]
            met = per["select"] < limit + (0 if workload == "read" else 0.05) and all(
                abs(per[k] - budget[k]) <= 0.05 for k in KINDS if k != "select"
            )
            out.append(
                {
                    "target": f"{workload}: statements/request <= {want}, coalesced: "
                    f"SELECT/request < {limit:g}"
                    if workload == "read"
                    else f"{workload}: statements/request <= {want} (reads coalesced)",
                    "measured": shown or "0",
                    "met": met,
                }
            )
            continue
        out.append(
            {
                "target": f"{workload}: statements/request = {want}{note}",
                "measured": shown or "0",
                "met": all(abs(per[k] - budget[k]) <= 0.05 for k in KINDS),
            }
        )
    sweep = results.get("sweep")
    if sweep:
        out.append(
            {
                "target": "read p99 during a sweep <= 2x quiet p99",
                "measured": f"{sweep['p99_ratio']:.2f}x ({sweep['during']['p99_ms']:.1f} vs "
                f"{sweep['quiet']['p99_ms']:.1f} ms)",
                "met": sweep["p99_ratio"] <= 2,
            }
        )
    scale = results.get("scale")
    if scale and "project" in scale["apps"]:
        project = scale["apps"]["project"]
        ratio = project["ratio"]
        measured = f"{100 * ratio:.1f}% (ratio of medians)"
        if scale.get("interleaved"):  # both sizes in every round: pairs, as for the apps
            ratio = paired_ratio(project["big"]["rps_rounds"], project["small"]["rps_rounds"])
            measured = f"{100 * ratio:.1f}% (ratio of medians {100 * project['ratio']:.1f}%)"
        out.append(
            {
                "target": f"read req/s with {scale['big']:,} sessions within 10% of {scale['small']:,}",
                "measured": measured,
                "met": ratio >= 0.9,
            }
        )
    return out


def paired_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a/b, each pair measured in the same round, seconds apart.

    The VM's speed drifts between rounds (one app's req/s moved by up to 1.6x across the
    rounds of one run), and both cells of a round see the same drift; a ratio of the two
    medians would mix rounds of different speeds. Both are printed.
    """
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def matrix_rows(matrix: dict[str, Any]) -> list[list[str]]:
    rows = []
    for workload, apps in matrix.items():
        lean = apps.get("lean")
        for app, s in apps.items():
            per = s["statements_per_request"]
            pct = f"{s['rps'] / lean['rps']:.2f}x" if lean else "-"
            db_ms = s.get("db_ms_per_1000")
            rows.append(
                [
                    workload,
                    app,
                    f"{s['rps']:,.0f}",
                    f"{s['p50_ms']:.2f}",
                    f"{s['p99_ms']:.2f}",
                    *(f"{per[k]:.2f}" for k in KINDS),
                    str(s["errors"]),
                    pct,
                    f"{db_ms:.0f}" if db_ms is not None else "-",
                    f"{s['cpu_cores']['server']:.2f}/{s['cpu_cores']['mariadb']:.2f}/"
                    f"{s['cpu_cores']['load_generator']:.2f}/{s['cpu_cores']['other']:.2f}",
                ]
            )
    return rows


HEADER = [
    "workload",
    "app",
    "req/s",
    "p50 ms",
    "p99 ms",
    "SELECT/req",
    "INSERT/req",
    "UPDATE/req",
    "DELETE/req",
    "errors",
    "x lean",
    "mariadbd ms/1k req",
    "CPU srv/db/wrk/other",
]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def scenario_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    sweep = results.get("sweep")
    if sweep:
        q, d = sweep["quiet"], sweep["during"]
        rows.append(
            [
                "sweep",
                "read, quiet (expired rows present)",
                f"{q['rps']:,.0f}",
                f"{q['p50_ms']:.2f}",
                f"{q['p99_ms']:.2f}",
                str(sum(q["errors"].values())),
            ]
        )
        rows.append(
            [
                "sweep",
                f"read during sweep of {sweep['rows_deleted']:,} rows in {sweep['seconds']:.1f}s "
                f"({sweep['rows_per_second']:,.0f} rows/s)",
                f"{d['rps']:,.0f}",
                f"{d['p50_ms']:.2f}",
                f"{d['p99_ms']:.2f}",
                str(sum(d["errors"].values())),
            ]
        )
    scale = results.get("scale")
    if scale:
        for app, r in scale["apps"].items():
            for size in ("small", "big"):
                s = r[size]
                rows.append(
                    [
                        "scale",
                        f"read {app}, {scale[size]:,} sessions",
                        f"{s['rps']:,.0f}",
                        f"{s['p50_ms']:.2f}",
                        f"{s['p99_ms']:.2f}",
                        str(s["errors"]),
                    ]
                )
    return rows


SCENARIO_HEADER = ["scenario", "what", "req/s", "p50 ms", "p99 ms", "errors"]


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("bench: matplotlib is not installed, no chart (pip install matplotlib)")
        return False
    matrix = results["matrix"]
    workloads = list(matrix)
    apps = list(next(iter(matrix.values())))
    colors = {"project": "#2b6cb0", "lean": "#2f855a", "raw": "#718096", "cookie": "#dd6b20"}
    fig, axes = plt.subplots(1, 4, figsize=(19, 5), gridspec_kw={"width_ratios": [3, 3, 2, 1.4]})
    width = 0.8 / len(apps)
    for ax, metric, title in (
        (axes[0], "rps", "requests/s (higher is better)"),
        (axes[1], "p99_ms", "p99 latency, ms (lower is better)"),
    ):
        for i, app in enumerate(apps):
            xs = [k + (i - (len(apps) - 1) / 2) * width for k in range(len(workloads))]
            values = [matrix[w][app][metric] for w in workloads]
            bars = ax.bar(xs, values, width, label=APP_TITLES[app], color=colors.get(app))
            if app == "project" and "lean" in apps:
                for bar, w in zip(bars, workloads, strict=True):
                    ratio = matrix[w]["project"][metric] / matrix[w]["lean"][metric]
                    ax.annotate(
                        f"{100 * ratio:.0f}%" if metric == "rps" else f"{ratio:.1f}x",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    sweep, scale = results.get("sweep"), results.get("scale")
    ax = axes[2]
    if scale:
        labels, values, tints = [], [], []
        for app, r in scale["apps"].items():
            labels += [f"{app}\n{scale['small']:,}", f"{app}\n{scale['big']:,}"]
            values += [r["small"]["rps"], r["big"]["rps"]]
            tints += [colors.get(app, "grey")] * 2
        ax.bar(range(len(values)), values, color=tints)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_title("scale: read req/s by live sessions")
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.set_axis_off()
    ax = axes[3]
    if sweep:
        values = [sweep["quiet"]["p99_ms"], sweep["during"]["p99_ms"]]
        ax.bar([0, 1], values, color=[colors["project"], "#c53030"])
        ax.set_xticks([0, 1], ["quiet", "during\nsweep"], fontsize=8)
        ax.set_title("sweep: read p99, ms", fontsize=10)
        ax.set_xlabel(
            f"{sweep['rows_deleted']:,} rows in {sweep['seconds']:.1f}s\n"
            f"({sweep['rows_per_second']:,.0f} rows/s)",
            fontsize=8,
        )
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.set_axis_off()
    fig.suptitle("asgi_mysql_session bench: uvicorn 1 worker (uvloop, httptools), medians of rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine_info(table: BenchTable, driver: Driver) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    versions = {}
    for dist in (
        "asgi_mysql_session",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "aiomysql",
        "PyMySQL",
        "msgpack",
        "itsdangerous",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    generator = driver.name
    if driver.wrk:
        with contextlib.suppress(OSError):
            head = subprocess.run([driver.wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
            generator = f"{head.split(' [')[0]}; {driver.name}"
    revision = "unknown"
    with contextlib.suppress(OSError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        )
        status = ["git", "status", "--porcelain", "--", "asgi_mysql_session"]
        dirty = subprocess.run(status, capture_output=True, text=True, cwd=ROOT)
        if head.returncode == 0:
            revision = head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    return {
        "revision": revision,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mariadb": table.server_info(),
        "packages": versions,
        "load_generator": generator,
    }


def report(doc: dict[str, Any], out: Path, *, write_json: bool = True) -> None:
    """Print the tables and targets; write the JSON, a Markdown copy and the chart."""
    config, results, info = doc["config"], doc["results"], doc["machine"]
    checks = doc["targets"] = targets(results)
    rows = matrix_rows(results["matrix"])
    say("\n" + text_table(HEADER, rows))
    srows = scenario_rows(results)
    if srows:
        say("\n" + text_table(SCENARIO_HEADER, srows))
    say("\ntargets:")
    for check in checks:
        say(f"  [{'met ' if check['met'] else 'MISS'}] {check['target']}: {check['measured']}")
    if write_json:
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [
        f"Run {doc['when']} at {info.get('revision', '?')}: {info['nproc']} x {info['cpu']}, "
        f"{info['memory_gib']} GiB, MariaDB {info['mariadb']['version']}, Python {info['python']}, "
        f"uvicorn {info['packages'].get('uvicorn')} (1 worker, uvloop, httptools), "
        f"load: {info['load_generator']}; pool {config['pool']}, {config['sessions']:,} "
        f"{config.get('session', 'login')} sessions, reads "
        f"{'coalesced' if config.get('coalesce', True) else 'one by one'}, "
        f"{config['rounds']} rounds x {config['duration']:g}s, medians.",
        "",
        md_table(HEADER, rows),
        "",
        md_table(SCENARIO_HEADER, srows) if srows else "",
        "",
        md_table(
            ["target", "measured", "met"],
            [[c["target"], c["measured"], "yes" if c["met"] else "**no**"] for c in checks],
        ),
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    drawn = chart(results, out.with_suffix(".png"))
    written = [
        out.with_suffix(x) for x in ([".json"] if write_json else []) + [".md"] + ([".png"] if drawn else [])
    ]
    say("\nwrote " + ", ".join(str(x) for x in written))


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
        url=os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
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
