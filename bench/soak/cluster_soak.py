"""`make cluster-soak`: two app processes on the 3-node Galera cluster, two nodes SIGKILLed in turn.

What runs (all on 127.0.0.1; the cluster is scripts/cluster.py's, its ports and folder follow
CLUSTER_PORT_OFFSET and CLUSTER_DIR; everything else is started and stopped here, by PID):

* app A and app B: ``uvicorn`` (1 worker each) serving bench/soak/app.py, A with the DSN
  ``n1,n2,n3``, B with ``n2,n3,n1`` (``connect_timeout=1``, ``timeout=2``), on a table of
  their own (and its lease table) created here and dropped at the end;
* the load, from this process: bench/soak/soak.py's ``Load`` (sequential users: login,
  increments, reads, logout, abandoned sessions), except that each request of a user goes to
  app A or app B at random, so consecutive requests of one session are served through
  different nodes (cross-node read-your-writes);
* the faults: at 25 % of the run the node that holds most of the apps' connections (counted
  on the server side, ``information_schema.PROCESSLIST``) is SIGKILLed, at 45 % it is started
  again (it rejoins by IST), at 62 % the busiest of the two other nodes is SIGKILLed and at
  80 % it is started again, so the cluster is whole at the end.

Checks, exit 1 when one fails: every answer within the counter bounds of the single-server
soak (``acknowledged <= n <= acknowledged + uncertain``, 503/timeouts being uncertain), every
answer that names a user names the session's own, and at the end every row read on *each*
node with ``wsrep_sync_wait=1`` (soak.verify): no acknowledged increment lost, no phantom, no
logged-out session back, no live session gone; no failed request outside the failover window
of a kill (``--window-bound`` s after it); ``/ping`` always answered; no traceback in the apps'
logs. The report gives each window (first and last failure after the kill), errors by kind,
and req/s before, during and after each kill. Exit 2 when it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pymysql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))

import cluster  # noqa: E402
import soak  # noqa: E402
from soak import FAILED, KINDS, Browser, Load, Result, Session, percentile, say  # noqa: E402

from asgi_mysql_session import ddl as session_ddl  # noqa: E402
from asgi_mysql_session import sql as session_sql  # noqa: E402

ORDERS = {"A": (1, 2, 3), "B": (2, 3, 1)}
ORDERS_NAMES = list(ORDERS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~40 s run (default ~2 minutes)")
    p.add_argument("--duration", type=float, help="seconds of load (default 120, quick 40)")
    p.add_argument("--users", type=int, help="simulated users (default 400, quick 300)")
    p.add_argument("--think", type=float, nargs=2, metavar=("MIN", "MAX"), default=(1.0, 3.0))
    p.add_argument("--max-lifetime", type=int, default=30, help="session idle lifetime in s (default 30)")
    p.add_argument("--gc-interval", type=float, default=5.0, help="sweep interval in s (default 5)")
    p.add_argument("--db-timeout", type=float, default=2.0, help="provider timeout in s (default 2)")
    p.add_argument("--connect-timeout", type=float, default=1.0, help="connect timeout in s (default 1)")
    p.add_argument("--pool-max", type=int, default=10, help="pool size per app (default 10)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="client timeout in s (default 30)")
    p.add_argument(
        "--window-bound",
        type=float,
        default=15.0,
        help="a failure later than this after a kill is a failure of the soak (default 15 s: "
        "Galera's eviction ~6 s + timeout + connect_timeout, with slack for a loaded machine)",
    )
    p.add_argument("--table", default="soak_cluster_session", help="table to create, use and drop")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the tables and the log directory")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 40.0 if args.quick else 120.0
    if args.users is None:
        args.users = 300 if args.quick else 400
    if not args.table.startswith("soak"):
        p.error("--table must start with 'soak': the soak drops it at the end")
    args.mysql_url = cluster.url(1)  # soak.Load and soak.verify read it; verify gets a connect too
    d = args.duration
    args.schedule = [
        ("kill", round(d * 0.25, 1)),
        ("start", round(d * 0.45, 1)),
        ("kill", round(d * 0.62, 1)),
        ("start", round(d * 0.80, 1)),
    ]
    return args


def dsn(order: tuple[int, ...], args: argparse.Namespace) -> str:
    hosts = ",".join(f"127.0.0.1:{cluster.sql_port(n)}" for n in order)
    options = (
        f"connect_timeout={args.connect_timeout:g}&timeout={args.db_timeout:g}"
        f"&pool_min=1&pool_max={args.pool_max}"
    )
    return f"mysql://root@{hosts}/{cluster.DATABASE}?{options}"


def node_connection(n: int, causal: bool = False, timeout: float = 1.0) -> pymysql.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=cluster.sql_port(n),
        user="root",
        password="",
        database=cluster.DATABASE,
        autocommit=True,
        connect_timeout=timeout,
        read_timeout=30 if causal else 3,
        init_command="SET SESSION wsrep_sync_wait = 1" if causal else None,
    )


def app_connections(n: int) -> int | None:
    """Connections of root over TCP on node n (the apps' pools), this one excluded; None if down."""
    try:
        conn = node_connection(n)
    except pymysql.MySQLError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE USER = 'root' AND HOST LIKE '127.0.0.1:%' AND ID <> CONNECTION_ID()"
            )
            return int(cur.fetchone()[0])
    except pymysql.MySQLError:
        return None
    finally:
        conn.close()


class Alternating:
    """A user's two browser tabs, one per app; each request goes to one of them at random."""

    def __init__(self, ports: list[int], rnd: random.Random) -> None:
        self.tabs = [Browser("127.0.0.1", port, idle=soak.KEEP_ALIVE - 5) for port in ports]
        self.rnd = rnd
        self.last = 0

    async def request(self, method: str, path: str, cookie: str | None) -> Any:
        self.last = self.rnd.randrange(len(self.tabs))
        return await self.tabs[self.last].request(method, path, cookie)

    def close(self) -> None:
        for tab in self.tabs:
            tab.close()


class ClusterLoad(Load):
    """soak.Load with two apps, the user check on every answer, and node kills for the fault."""

    def __init__(self, args: argparse.Namespace, ports: list[int]) -> None:
        super().__init__(args, ports[0], ("127.0.0.1", 0))
        self.ports = ports
        self.tabs_made = 0
        self.log: list[tuple[float, float, str, str, int]] = []  # start, end, route, kind, app index
        self.sid_user: dict[str, str] = {}
        self.user_checked = 0
        self.marks: list[tuple[float, str, int]] = []  # t, kill/start/ready, node
        self.samples: list[tuple[float, list[int | None]]] = []  # t, app connections per node
        self.restarts: list[asyncio.Task[Any]] = []

    def browser(self) -> Any:
        self.tabs_made += 1
        return Alternating(self.ports, random.Random(self.args.seed * 7919 + self.tabs_made))

    async def request(self, tab: Any, method: str, path: str, sid: str | None, route: str) -> Result:
        result = await super().request(tab, method, path, sid, route)
        self.log.append((result.start, result.end, route, result.kind, tab.last))
        body = result.body
        if result.kind == "ok" and isinstance(body, dict) and "user" in body:
            expected = self.sid_user.get(sid) if sid else path.partition("user=")[2]
            self.user_checked += 1
            if body["user"] != expected:
                self.stats.violation(
                    "served to the wrong user", f"{route} of {expected}'s session answered {body['user']!r}"
                )
        return result

    async def login(self, tab: Any, name: str) -> Session | None:
        session = await super().login(tab, name)
        if session is not None:
            self.sid_user[session.sid] = name
        return session

    async def fault(self) -> None:
        """The kill schedule (replaces the fault proxy's cut)."""
        killed: list[int] = []
        for action, at in self.args.schedule:
            await asyncio.sleep(max(0.0, at - self.now()))
            if action == "kill":
                await asyncio.gather(*self.restarts)  # never kill a second node while one rejoins
                counts = await asyncio.gather(*(asyncio.to_thread(app_connections, n) for n in cluster.NODES))
                candidates = [n for n in cluster.NODES if n not in killed and counts[n - 1] is not None]
                victim = max(candidates, key=lambda n: (counts[n - 1] or 0, -n))
                t = self.now()
                await asyncio.to_thread(cluster.kill, victim)
                self.marks.append((t, "kill", victim))
                killed.append(victim)
                shown = ", ".join(
                    f"n{n}: {c if c is not None else 'down'}"
                    for n, c in zip(cluster.NODES, counts, strict=True)
                )
                say(f"  t={t:5.1f}s  SIGKILL node{victim} (app connections per node: {shown})")
            else:
                victim = killed[-1]
                self.marks.append((self.now(), "start", victim))
                say(f"  t={self.now():5.1f}s  starting node{victim} again")
                self.restarts.append(asyncio.create_task(self.restart(victim)))

    async def run(self) -> None:
        await super().run()
        await asyncio.gather(*self.restarts)  # the last rejoin may end after the load

    async def restart(self, n: int) -> None:
        await asyncio.to_thread(cluster.start, n)
        self.marks.append((self.now(), "ready", n))
        say(f"  t={self.now():5.1f}s  node{n} rejoined (Synced)")

    async def sample(self) -> None:
        while self.now() < self.stop_at:
            counts = await asyncio.gather(*(asyncio.to_thread(app_connections, n) for n in cluster.NODES))
            self.samples.append((self.now(), list(counts)))
            await asyncio.sleep(1.0)

    async def progress(self) -> None:
        task = asyncio.create_task(self.sample())
        try:
            await super().progress()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- the figures -------------------------------------------------------------------------------


def windows(load: ClusterLoad, bound: float) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The failures after each kill (its window) and, separately, those outside every window."""
    kills = [(t, n) for t, what, n in load.marks if what == "kill"]
    failed = [e for e in load.log if e[3] in FAILED]
    found: list[dict[str, Any]] = []
    inside: set[int] = set()
    for k, (t, n) in enumerate(kills):
        # A window runs from the kill to ``bound`` s after it, or to the next kill if sooner.
        until = min(t + bound, kills[k + 1][0] - 0.5) if k + 1 < len(kills) else t + bound
        mine = [(i, e) for i, e in enumerate(failed) if t - 0.5 <= e[0] <= until]
        inside.update(i for i, _ in mine)
        ends = [e[1] for _, e in mine]
        per_app: dict[str, Any] = {}
        for a, name in enumerate(ORDERS):
            its = [e for _, e in mine if e[4] == a]
            ok_after = [
                e[1]
                for e in load.log
                if e[4] == a and e[3] == "ok" and e[0] > t and e[2] in ("incr", "login")
            ]
            per_app[name] = {
                "failed": len(its),
                "last_failure_end": round(max(e[1] for e in its) - t, 2) if its else None,
                "first_write_ok_started_after_kill": round(min(ok_after) - t, 2) if ok_after else None,
            }
        found.append(
            {
                "node": n,
                "kill_at": round(t, 2),
                "failed": len(mine),
                "kinds": dict(Counter(e[3] for _, e in mine)),
                "routes": dict(Counter(e[2] for _, e in mine)),
                "first_failure": round(min(e[0] for _, e in mine) - t, 2) if mine else None,
                "length": round(max(ends) - t, 2) if mine else 0.0,
                "apps": per_app,
            }
        )
    outside = Counter(e[3] for i, e in enumerate(failed) if i not in inside)
    return found, outside


def segments(load: ClusterLoad, wins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """req/s, 2xx/s and failures between the marks: kills, the end of each window, restarts, rejoins."""
    cuts: list[tuple[float, str]] = [(0.0, "start")]
    for t, what, n in sorted(load.marks):
        cuts.append((t, f"{what} node{n}"))
        if what == "kill":
            win = next(w for w in wins if w["node"] == n and abs(w["kill_at"] - t) < 0.01)
            if win["length"]:
                cuts.append((t + win["length"] + 0.001, f"node{n}'s window over"))
    cuts.sort()
    cuts.append((load.args.duration, "end"))
    out = []
    for (a, label_a), (b, label_b) in itertools.pairwise(cuts):
        if b - a < 0.05:
            continue
        events = [e for e in load.log if a <= e[1] < b]
        ok = [e[1] - e[0] for e in events if e[3] == "ok"]
        out.append(
            {
                "from": round(a, 1),
                "to": round(b, 1),
                "what": f"{label_a} -> {label_b}",
                "req_s": round(len(events) / (b - a), 1),
                "ok_s": round(len(ok) / (b - a), 1),
                "failed": sum(1 for e in events if e[3] in FAILED),
                "p50_ms": round(percentile(ok, 0.5) * 1000, 1) if ok else None,
                "p99_ms": round(percentile(ok, 0.99) * 1000, 1) if ok else None,
            }
        )
    return out


def around_kills(load: ClusterLoad, wins: list[dict[str, Any]], span: float = 10.0) -> list[dict[str, Any]]:
    """req/s (all answers and 2xx) in the ``span`` s before a kill, in its window, and after it."""
    rows = []
    for w in wins:
        t, length = w["kill_at"], max(w["length"], 0.1)
        parts = {"before": (t - span, t), "window": (t, t + length), "after": (t + length, t + length + span)}
        row: dict[str, Any] = {"node": w["node"], "kill_at": t}
        for name, (a, b) in parts.items():
            events = [e for e in load.log if a <= e[1] < b]
            row[name] = {
                "req_s": round(len(events) / (b - a), 1),
                "ok_s": round(sum(1 for e in events if e[3] == "ok") / (b - a), 1),
            }
        rows.append(row)
    return rows


def log_problems(paths: list[Path]) -> tuple[int, int, list[str]]:
    """(tracebacks, WARNING/ERROR lines, a few of them) in the apps' logs."""
    tracebacks = errors = 0
    shown: list[str] = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(errors="replace").splitlines():
                if "Traceback" in line:
                    tracebacks += 1
                if " ERROR " in line or " WARNING " in line:
                    errors += 1
                    if len(shown) < 12:
                        shown.append(f"{path.stem}: {line[:200]}")
    return tracebacks, errors, shown


def start_app(
    name: str, order: tuple[int, ...], args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = soak.free_port()
    env = {
        **os.environ,
        "SOAK_MYSQL_URL": dsn(order, args),
        "SOAK_TABLE": args.table,
        "SOAK_MAX_LIFETIME": str(args.max_lifetime),
        "SOAK_GC_INTERVAL": str(args.gc_interval),
        "SOAK_SERIALIZE": "",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(HERE),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--no-access-log", "--log-level", "warning", "--lifespan", "on",
            "--timeout-graceful-shutdown", "10", "--timeout-keep-alive", str(soak.KEEP_ALIVE),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    if not soak.wait_ready(port, 1, proc):
        raise RuntimeError(f"app {name} did not come up; see {log}")
    say(f"cluster-soak: app {name} pid {proc.pid} on :{port}, DSN {dsn(order, args).split('?')[0]}")
    return proc, port


def run_sql(statements: list[str]) -> None:
    conn = node_connection(1, timeout=5)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="asgi-mysql-session-cluster-soak-"))
    bound = int(args.duration + args.request_timeout + 240)

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the cluster soak exceeded its {bound}s bound")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.alarm(bound)
    apps: list[subprocess.Popen[bytes]] = []
    logs = [logdir / f"app-{name}.log" for name in ORDERS]
    table = session_sql.check_table_name(args.table)
    lease = session_sql.lease_table_name(table)
    tables_made = False
    outcome = 2
    try:
        say(f"cluster-soak: logs in {logdir}; cluster ports {cluster.sql_port(1)}-{cluster.sql_port(3)}")
        cluster.start()
        run_sql(
            [
                f"DROP TABLE IF EXISTS `{table}`",
                f"DROP TABLE IF EXISTS `{lease}`",
                session_ddl.create_table(table),
                session_ddl.create_lease_table(table),
            ]
        )
        tables_made = True
        ports = []
        for (name, order), log in zip(ORDERS.items(), logs, strict=True):
            proc, port = start_app(name, order, args, log)
            apps.append(proc)
            ports.append(port)
        kills = ", ".join(f"{what} at t={at:g}s" for what, at in args.schedule)
        say(f"cluster-soak: {args.users} users for {args.duration:g}s, alternating apps; {kills}")
        load = ClusterLoad(args, ports)
        groups = {"client": [os.getpid()], "app A": [apps[0].pid], "app B": [apps[1].pid]}
        before = soak.cpu_snapshot(groups)
        started = time.monotonic()
        soak.run_loop(load.run())
        after = soak.cpu_snapshot(groups)
        elapsed = time.monotonic() - started
        cpu = {k: round((after[k] - before[k]) / elapsed, 2) for k in groups}
        cpu["whole machine"] = round((after["machine busy"] - before["machine busy"]) / elapsed, 2)
        say(
            "cluster-soak: load over; stopping the apps, making the cluster whole, "
            "checking every row on every node"
        )
        for proc, name in zip(apps, ORDERS, strict=False):
            soak.stop_process(proc, f"app {name}", 20)
        cluster.start()  # idempotent; the last restart normally finished within the run
        check_time = load.now()
        checks = {}
        for n in cluster.NODES:
            checks[n] = soak.verify(
                load, args, check_time, connect=lambda n=n: node_connection(n, causal=True, timeout=5)
            )
        wins, outside = windows(load, args.window_bound)
        segs = segments(load, wins)
        near = around_kills(load, wins)
        tracebacks, warnings, shown = log_problems(logs)
        pings_failed = sum(1 for _, ok in load.stats.pings if not ok)
        kinds = Counter(e[3] for e in load.log)
        routes = Counter(e[2] for e in load.log)
        per_app = Counter(ORDERS_NAMES[e[4]] for e in load.log)
        sessions = load.sessions
        acked = sum(s.acked for s in sessions)
        uncertain = sum(s.uncertain for s in sessions)

        say("")
        say(
            f"requests: {len(load.log)} ({len(load.log) / args.duration:.0f}/s), by app {dict(per_app)}, "
            f"by route {dict(routes)}"
        )
        say("outcomes: " + ", ".join(f"{soak.KIND_TITLES[k]} {kinds[k]}" for k in KINDS if kinds[k]))
        say(f"failures outside the kill windows: {sum(outside.values())} {dict(outside) or ''}")
        say(
            f"sessions: {len(sessions)} created, {load.stats.logouts} logged out, {load.stats.abandoned} "
            f"abandoned, {load.stats.gone_expected} expired and found gone"
        )
        say(
            f"answers checked as they came: /incr {load.stats.live_checked['incr']}, "
            f"/read {load.stats.live_checked['read']}; user named in {load.user_checked} answers"
        )
        say(f"/ping: {len(load.stats.pings) - pings_failed}/{len(load.stats.pings)} answered")
        say(f"CPU (cores): {cpu}")
        say("")
        say("failover windows (times from the SIGKILL):")
        for w in wins:
            apps_text = "; ".join(
                f"app {name}: {a['failed']} failed, last failure ended +{a['last_failure_end']}s, "
                f"first write started after the kill acknowledged at "
                f"+{a['first_write_ok_started_after_kill']}s"
                for name, a in w["apps"].items()
            )
            say(
                f"  node{w['node']} killed at t={w['kill_at']}s: {w['failed']} failed {w['kinds']} "
                f"by route {w['routes']}, first failure +{w['first_failure']}s, window {w['length']}s"
            )
            say(f"    {apps_text}")
        say("")
        say("throughput around each kill (10 s before, the window, 10 s after; all answers / 2xx per s):")
        for row in near:
            say(
                f"  node{row['node']}: before {row['before']['req_s']}/{row['before']['ok_s']}, "
                f"window {row['window']['req_s']}/{row['window']['ok_s']}, "
                f"after {row['after']['req_s']}/{row['after']['ok_s']}"
            )
        say("")
        say(f"{'from':>6} {'to':>6}  {'req/s':>6} {'2xx/s':>6} {'failed':>6} {'p50':>6} {'p99':>7}  segment")
        for s in segs:
            say(
                f"{s['from']:6.1f} {s['to']:6.1f}  {s['req_s']:6.1f} {s['ok_s']:6.1f} {s['failed']:6d} "
                f"{s['p50_ms'] if s['p50_ms'] is not None else '-':>6} "
                f"{s['p99_ms'] if s['p99_ms'] is not None else '-':>7}  {s['what']}"
            )
        say("")
        say("app connections per node (server side), one sample every ~1 s around the kills:")
        for t, what, n in sorted(load.marks):
            near_samples = [
                f"{st:.0f}s:{'/'.join('-' if c is None else str(c) for c in cs)}"
                for st, cs in load.samples
                if t - 1.5 <= st <= t + 10
            ]
            say(f"  {what} node{n} at t={t:.1f}s: {' '.join(near_samples)}")
        say("")
        say(f"counters: {acked} increments acknowledged, {uncertain} uncertain (503/timeout)")
        for n, c in checks.items():
            say(
                f"  node{n} (wsrep_sync_wait=1): {c.rows} rows, {c.verified_sessions} sessions checked "
                f"holding {c.verified_acked} acknowledged increments: {c.exact} exact, "
                f"{c.with_uncertain_applied} with "
                f"{c.uncertain_applied} uncertain increments applied, {c.lost_increments} lost, "
                f"{c.phantom_increments} phantom, {c.resurrected} logged-out back, "
                f"{c.vanished} live missing, "
                f"{c.orphans} rows no client knows (logins unanswered: {load.stats.login_uncertain})"
            )
        say(f"app logs: {tracebacks} tracebacks, {warnings} WARNING/ERROR lines")
        for line in shown:
            say(f"  {line}")

        reasons = []
        if load.stats.violations:
            reasons.append("violations: " + ", ".join(f"{k} {v}" for k, v in load.stats.violations.items()))
        for n, c in checks.items():
            if c.lost_increments or c.phantom_increments or c.resurrected or c.vanished:
                reasons.append(
                    f"node{n}: {c.lost_increments} lost, {c.phantom_increments} phantom, "
                    f"{c.resurrected} resurrected, {c.vanished} vanished"
                )
        if len({c.rows for c in checks.values()}) > 1:
            reasons.append(f"nodes disagree on the row count: {[c.rows for c in checks.values()]}")
        if outside:
            reasons.append(f"failures outside the kill windows: {dict(outside)}")
        if (
            len([m for m in load.marks if m[1] == "kill"]) < 2
            or len([m for m in load.marks if m[1] == "ready"]) < 2
        ):
            reasons.append(f"the kill schedule did not complete: {load.marks}")
        for w in wins:
            for name, a in w["apps"].items():
                if a["first_write_ok_started_after_kill"] is None:
                    reasons.append(f"app {name} never wrote again after node{w['node']} was killed")
        if pings_failed:
            reasons.append(f"{pings_failed} /ping failed")
        if tracebacks:
            reasons.append(f"{tracebacks} tracebacks in the app logs")
        if not cluster.status():
            reasons.append("the cluster is not whole at the end")
        figures = {
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "requests": len(load.log),
            "kinds": dict(kinds),
            "outside_windows": dict(outside),
            "windows": wins,
            "around_kills": near,
            "segments": segs,
            "acknowledged": acked,
            "uncertain": uncertain,
            "checks": {n: vars(c) for n, c in checks.items()},
            "violations": dict(load.stats.violations),
            "cpu": cpu,
            "marks": load.marks,
            "result": "FAIL" if reasons else "PASS",
            "reasons": reasons,
        }
        text = json.dumps(figures, indent=1, default=str)
        (logdir / "figures.json").write_text(text)
        if args.json:
            args.json.write_text(text)
        if load.stats.examples:
            say("first violations:")
            for line in load.stats.examples:
                say(f"  {line}")
        say("")
        if reasons:
            say("RESULT: FAIL - " + "; ".join(reasons))
            outcome = 1
        else:
            say(
                "RESULT: PASS - no acknowledged increment lost on any node, "
                "failures only inside the failover windows"
            )
            outcome = 0
        return outcome
    except KeyboardInterrupt:
        say("cluster-soak: interrupted")
        return 2
    except (Exception, SystemExit) as exc:
        say(f"cluster-soak: could not run: {type(exc).__name__}: {exc}")
        return 2
    finally:
        signal.alarm(0)
        for proc, name in zip(apps, ORDERS, strict=False):
            soak.stop_process(proc, f"app {name}", 20)
        with contextlib.suppress(Exception, SystemExit):
            cluster.start()  # a run cut short may have left a node down
        if tables_made and not args.keep:
            with contextlib.suppress(pymysql.MySQLError):
                run_sql([f"DROP TABLE IF EXISTS `{table}`", f"DROP TABLE IF EXISTS `{lease}`"])
        if outcome == 0 and not args.keep:
            for path in logdir.iterdir():
                path.unlink()
            logdir.rmdir()
        else:
            say(f"cluster-soak: logs kept in {logdir}")


if __name__ == "__main__":
    sys.exit(main())
