"""`make soak`: uvicorn with 2 workers, thousands of sessions, the database cut once mid-run.

What runs (all on 127.0.0.1, all started and stopped by this script, by PID):

* ``tests/faultproxy.py`` as a separate process between the app and MariaDB, with its
  control port;
* ``uvicorn --workers 2`` serving bench/soak/app.py, whose provider DSN points at the proxy
  (short ``connect_timeout``/``timeout``, sweeps every few seconds, a short idle lifetime so
  abandoned sessions expire and the sweeps have work), on a dedicated table created here and
  dropped at the end;
* the load, from this process (asyncio): ``--users`` simulated users, each a sequential
  loop like a browser tab (its own keep-alive connection, one request at a time, think
  time between them, its own session cookie): log in, increment a counter, read it,
  sometimes log out and log in again, sometimes walk away from the session and start a
  new one.

Mid-run the proxy drops every database connection and refuses new ones for ``--outage``
seconds (``--fault blackhole``: connections hang instead), then heals. The report gives
requests served, outcomes by kind and phase, latency, time to detect the cut and to recover,
sweeps seen in the server log, and the counter check: every session row left in the table
is read directly from MariaDB (``session_key`` = SHA-256 hex of the id, ``session_data``
msgpack) and its counter must satisfy ``acknowledged <= stored <= acknowledged + uncertain``,
where *acknowledged* counts the 2xx answers to ``/incr`` for that session and *uncertain*
the increments whose outcome the client cannot know (503/5xx, timeout, connection error).
Values returned by ``/incr`` and ``/read`` are checked against the same bounds as they come.

Exit status: 0 when every check holds and the service recovered, 1 when an acknowledged
increment was lost (or any other check failed, or it never recovered), 2 when the soak
could not run. ``--quick`` is a ~30 s variant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import pymysql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from asgi_mysql_session import sql as session_sql  # noqa: E402
from asgi_mysql_session.dsn import parse_dsn  # noqa: E402
from asgi_mysql_session.ids import hash_id  # noqa: E402

COOKIE = "session"
#: uvicorn's keep-alive timeout for the run; clients reopen connections idle for 5 s less.
KEEP_ALIVE = 60
#: Outcomes after which an increment may or may not have been stored.
UNCERTAIN = {"503", "5xx", "timeout", "connection"}
#: Outcomes counted as failures in the success rate (403 is the app's own answer).
FAILED = UNCERTAIN | {"409", "4xx"}
KINDS = ("ok", "503", "409", "403", "4xx", "5xx", "timeout", "connection")
KIND_TITLES = {
    "ok": "2xx",
    "503": "503 database unavailable (middleware)",
    "409": "409 session ended / conflict",
    "403": "403 session unknown to the server",
    "4xx": "other 4xx",
    "5xx": "500 and other 5xx",
    "timeout": "client timeout",
    "connection": "connection error",
}
PHASES = ("before", "outage", "after")
ROUTES = ("login", "incr", "read", "logout")


def say(message: str = "") -> None:
    with contextlib.suppress(OSError):  # a closed stdout (| head) must not stop the cleanup
        print(message, flush=True)


# -- configuration -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Soak asgi_mysql_session under uvicorn with a database cut.")
    p.add_argument("--quick", action="store_true", help="~30 s run: fewer users, shorter outage and lifetime")
    p.add_argument("--duration", type=float, help="seconds of load (default 120, quick 30)")
    p.add_argument("--users", type=int, help="simulated users (default 2000, quick 1000)")
    p.add_argument("--outage", type=float, help="seconds the database is cut (default 8, quick 5)")
    p.add_argument("--cut-at", type=float, help="seconds into the run when the cut starts (default 45%%)")
    p.add_argument(
        "--fault",
        choices=("refuse", "blackhole"),
        default="refuse",
        help="refuse: drop + refuse new connections; blackhole: drop + new connections hang",
    )
    p.add_argument(
        "--think",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(1.0, 3.0),
        help="seconds a user waits between requests, uniform (default 1 3)",
    )
    p.add_argument("--max-lifetime", type=int, help="session idle lifetime in s (default 20, quick 10)")
    p.add_argument("--gc-interval", type=float, default=5.0, help="sweep interval in s (default 5)")
    p.add_argument("--db-timeout", type=float, default=2.0, help="provider timeout in s (default 2)")
    p.add_argument("--connect-timeout", type=float, default=1.0, help="connect timeout in s (default 1)")
    p.add_argument("--pool-max", type=int, default=10, help="aiomysql pool size per worker (default 10)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="client timeout in s (default 30)")
    p.add_argument("--serialize", action="store_true", help="run /incr in the middleware's serialized mode")
    p.add_argument("--table", default="soak_session", help="table to create, use and drop")
    p.add_argument("--mysql-url", default=os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the table and the log directory")
    p.add_argument(
        "--self-test",
        action="store_true",
        help="after the load, damage a few rows behind the server's back and check that the "
        "counter check reports exactly that damage (tests the checker, not the package)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    if args.duration is None:
        args.duration = 30.0 if quick else 120.0
    if args.users is None:
        args.users = 1000 if quick else 2000
    if args.outage is None:
        args.outage = 5.0 if quick else 8.0
    if args.max_lifetime is None:
        args.max_lifetime = 10 if quick else 20
    if args.cut_at is None:
        args.cut_at = round(args.duration * 0.45, 1)
    if not (args.cut_at > 0 and args.cut_at + args.outage < args.duration):
        p.error("the cut must start and end within the run (--cut-at + --outage < --duration)")
    if not args.table.startswith("soak"):
        p.error("--table must start with 'soak': the soak drops it at the end")
    if args.think[0] < 0 or args.think[1] < args.think[0]:
        p.error("--think MIN MAX with 0 <= MIN <= MAX")
    if args.max_lifetime < args.outage + 4:
        p.error("--max-lifetime must exceed --outage by a few seconds, or live sessions expire in the cut")
    return args


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first stdout line of ``proc`` within ``timeout`` seconds (empty if none)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().decode(errors="replace").strip()


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def stop_process(proc: subprocess.Popen[bytes] | None, name: str, grace: float) -> None:
    """SIGTERM, wait ``grace`` s, then SIGKILL it and the children it still has (by PID)."""
    if proc is None or proc.poll() is not None:
        return
    kids = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    say(f"  {name} (pid {proc.pid}) did not stop within {grace:g}s: killing it and its children")
    for pid in [*children(proc.pid), *kids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait(5)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK, sum(values) / TICK


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    found = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
    found["machine busy"], found["machine total"] = machine_busy()
    return found


def admin_connection(url: str) -> pymysql.Connection:
    args = parse_dsn(url).pymysql_args()
    return pymysql.connect(**args, autocommit=True, connect_timeout=5, read_timeout=30)


def proxy_dsn(url: str, port: int, args: argparse.Namespace) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    options = (
        f"connect_timeout={args.connect_timeout:g}&timeout={args.db_timeout:g}"
        f"&pool_min=1&pool_max={args.pool_max}"
    )
    return f"mysql://{netloc}{parts.path}?{options}"


# -- the load ------------------------------------------------------------------------------


class HTTPError(Exception):
    """The answer was not valid HTTP/1.1 (counted as a connection error)."""


class Browser:
    """One keep-alive HTTP/1.1 connection, used one request at a time, like a browser tab.

    A minimal client on asyncio streams: httpx costs 0.7 ms of CPU per request on this
    2-core machine, and 4 ms with 50 requests in flight on its pool, which would make the
    load generator the bottleneck; this costs about 0.02 ms. Cookies are whatever the
    caller sends. An idle connection is reopened before the server's keep-alive timeout
    could close it, so a connection error is always a real one (and never retried: the
    outcome of a request that got no answer stays unknown).
    """

    def __init__(self, host: str, port: int, idle: float) -> None:
        self.host, self.port, self.idle = host, port, idle
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, cookie: str | None
    ) -> tuple[int, dict[str, list[str]], bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > self.idle:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        try:
            head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            if cookie:
                head += f"cookie: {cookie}\r\n"
            if method == "POST":
                head += "content-length: 0\r\n"
            writer.write(head.encode("latin-1") + b"\r\n")
            raw = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = raw.decode("latin-1").split("\r\n")
            version, _, rest = status_line.partition(" ")
            if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
                raise HTTPError(f"bad status line {status_line[:40]!r}")
            headers: dict[str, list[str]] = defaultdict(list)
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()].append(value.strip())
            if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await reader.readexactly(int(headers.get("content-length", ["0"])[0]))
        except BaseException:
            self.close()  # never reuse a connection whose state is unknown
            raise
        if "close" in ",".join(headers.get("connection", [])).lower():
            self.close()
        self.last_used = time.monotonic()
        return int(rest[:3]), headers, body


@dataclass
class Session:
    """What one simulated user knows about one of its sessions."""

    sid: str
    user: str
    created: float
    #: Until when the row is certainly alive (soak clock): an acknowledged write at ``t`` set
    #: the deadline to at least ``t + max_lifetime - 1`` (whole seconds), an acknowledged read
    #: touched it to at least ``t + max_lifetime - touch_after - 1``.
    live_until: float
    acked: int = 0
    uncertain: int = 0
    refused: int = 0  # 409 without the session ending
    last_n: int = 0
    ended: str | None = None  # logout, logout?, abandoned, gone


@dataclass
class Result:
    kind: str
    status: int | None
    body: Any
    cookies: list[str]
    detail: str
    start: float
    end: float


@dataclass
class Stats:
    events: list[tuple[float, str, str, float]] = field(default_factory=list)  # end, route, kind, latency
    workers: Counter[str] = field(default_factory=Counter)
    by_worker: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # worker, phase, kind
    first_write_by_worker: dict[str, float] = field(default_factory=dict)  # after heal
    violations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    login_uncertain: int = 0
    logins: int = 0
    logouts: int = 0
    abandoned: int = 0
    gone_expected: int = 0
    pings: list[tuple[float, bool]] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # event-loop lag samples of this client
    live_checked: Counter[str] = field(default_factory=Counter)  # answers held to the bounds as they came
    cut: float | None = None
    heal: float | None = None
    proxy_status: dict[str, str] = field(default_factory=dict)

    def violation(self, kind: str, detail: str) -> None:
        self.violations[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")


def session_cookie(result: Result) -> str | None:
    """The id a response set (``""`` when it expired the cookie), None if it set none."""
    for header in result.cookies:
        name, _, rest = header.partition("=")
        if name.strip() != COOKIE:
            continue
        value = rest.split(";", 1)[0].strip()
        if not value or "max-age=0" in rest.lower().replace(" ", ""):
            return ""
        return value
    return None


class Load:
    def __init__(self, args: argparse.Namespace, port: int, control: tuple[str, int]) -> None:
        self.args = args
        self.port = port
        self.control = control
        self.stats = Stats()
        self.sessions: list[Session] = []
        self.t0 = 0.0
        self.t0_wall = 0.0
        self.stop_at = 0.0
        self.lifetime = args.max_lifetime
        self.touch_after = max(1, args.max_lifetime // 10)  # the provider's default
        self.transport_errors: Counter[str] = Counter()
        self.failed: list[str] = []  # start, end, route, status, kind, detail of non-2xx requests

    def now(self) -> float:
        return time.monotonic() - self.t0

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.port, idle=KEEP_ALIVE - 5)

    async def request(self, tab: Browser, method: str, path: str, sid: str | None, route: str) -> Result:
        start = self.now()
        status: int | None = None
        body: Any = None
        cookies: list[str] = []
        detail = ""
        worker = "-"
        try:
            code, headers, raw = await asyncio.wait_for(
                tab.request(method, path, f"{COOKIE}={sid}" if sid else None), self.args.request_timeout
            )
            status = code
            cookies = headers.get("set-cookie", [])
            worker = headers.get("x-worker", ["?"])[0]
            self.stats.workers[worker] += 1
            if headers.get("content-type", [""])[0].startswith("application/json"):
                body = json.loads(raw)
            else:
                detail = raw[:80].decode(errors="replace")
            if 200 <= code < 300:
                kind = "ok"
            elif code in (503, 409, 403):
                kind = str(code)
            else:
                kind = "4xx" if code < 500 else "5xx"
        except TimeoutError:
            kind = "timeout"
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            HTTPError,
            ValueError,
        ) as exc:
            kind = "connection"
            detail = f"{type(exc).__name__}: {exc}"[:80]
            self.transport_errors[type(exc).__name__] += 1
        end = self.now()
        stats = self.stats
        stats.events.append((end, route, kind, end - start))
        cut, heal = stats.cut, stats.heal
        phase = "before" if cut is None or end < cut else "outage" if heal is None or end < heal else "after"
        stats.by_worker[worker, phase, kind] += 1
        if heal is not None and start >= heal and kind == "ok" and route in ("incr", "login"):
            stats.first_write_by_worker.setdefault(worker, end - heal)
        if kind != "ok" and len(self.failed) < 100_000:
            self.failed.append(f"{start:.3f}\t{end:.3f}\t{route}\t{status}\t{kind}\t{detail}")
        if kind in ("5xx", "4xx") and len(self.stats.examples) < 20:
            self.stats.examples.append(f"{route} answered {status}: {detail}")
        return Result(kind, status, body, cookies, detail, start, end)

    # -- one user ------------------------------------------------------------------------

    async def user(self, index: int) -> None:
        rnd = random.Random(self.args.seed * 1_000_003 + index)
        name = f"u{index}"
        await asyncio.sleep(rnd.uniform(0, min(5.0, self.args.duration / 10)))  # ramp-up
        tab = self.browser()
        try:
            await self.browse(tab, rnd, name)
        finally:
            tab.close()

    async def browse(self, tab: Browser, rnd: random.Random, name: str) -> None:
        current: Session | None = None
        pending_logout = False
        while self.now() < self.stop_at:
            if current is None:
                current = await self.login(tab, name)
            elif pending_logout or (roll := rnd.random()) < 0.04:
                pending_logout = not await self.logout(tab, current)
                if not pending_logout:
                    current = None
            elif roll < 0.06:
                current.ended = "abandoned"  # the tab is closed: the session is left to expire
                self.stats.abandoned += 1
                current = None
            elif roll < 0.60:
                if not await self.incr(tab, current):
                    current = None
            elif not await self.read(tab, current):
                current = None
            await asyncio.sleep(rnd.uniform(*self.args.think))
        if current is not None and pending_logout:
            current.ended = "logout?"

    async def login(self, tab: Browser, name: str) -> Session | None:
        result = await self.request(tab, "POST", f"/login?user={name}", None, "login")
        if result.kind != "ok":
            if result.kind in UNCERTAIN:
                self.stats.login_uncertain += 1  # a row may exist that nobody knows the id of
            return None
        sid = session_cookie(result)
        if not sid:
            self.stats.violation("login without a session cookie", f"status {result.status}")
            return None
        self.stats.logins += 1
        session = Session(sid, name, result.end, result.start + self.lifetime - 1)
        self.sessions.append(session)
        return session

    def gone(self, session: Session, result: Result) -> None:
        """The server no longer knows the session: fine if it may have expired, else a loss."""
        session.ended = "gone"
        if result.end < session.live_until:
            self.stats.violation(
                "live session vanished",
                f"{session.user} {hash_id(session.sid)[:12]}: unknown {session.live_until - result.end:.1f}s "
                f"before it could expire, {session.acked} acknowledged increments",
            )
        else:
            self.stats.gone_expected += 1

    def check_cookie(self, session: Session, result: Result) -> bool:
        """False if the response ended the session (expired cookie)."""
        value = session_cookie(result)
        if value == "":
            return False
        if value is not None and value != session.sid:
            self.stats.violation("id changed outside login", f"{session.user} on {result.status}")
        return True

    async def incr(self, tab: Browser, session: Session) -> bool:
        acked, uncertain = session.acked, session.uncertain
        result = await self.request(tab, "POST", "/incr", session.sid, "incr")
        if result.kind == "ok":
            n = int(result.body["n"])
            self.stats.live_checked["incr"] += 1
            if n < acked + 1:
                self.stats.violation(
                    "lost acknowledged increment (seen live)",
                    f"{session.user}: /incr answered {n} after {acked} acknowledged increments",
                )
            elif n > acked + 1 + uncertain:
                self.stats.violation(
                    "phantom increment (seen live)",
                    f"{session.user}: /incr answered {n}, at most {acked + 1 + uncertain} possible",
                )
            if n <= session.last_n:
                self.stats.violation("counter went back", f"{session.user}: {session.last_n} then {n}")
            session.acked += 1
            session.last_n = n
            session.live_until = max(session.live_until, result.start + self.lifetime - 1)
            return self.check_cookie(session, result)
        if result.kind in UNCERTAIN:
            session.uncertain += 1
            return True
        if result.kind == "403" or session_cookie(result) == "":
            self.gone(session, result)
            return False
        if result.kind == "409":
            session.refused += 1
        return True

    async def read(self, tab: Browser, session: Session) -> bool:
        result = await self.request(tab, "GET", "/read", session.sid, "read")
        if result.kind == "ok":
            n = int(result.body["n"])
            self.stats.live_checked["read"] += 1
            if not session.acked <= n <= session.acked + session.uncertain:
                self.stats.violation(
                    "read out of bounds",
                    f"{session.user}: /read answered {n}, acknowledged {session.acked}, "
                    f"uncertain {session.uncertain}",
                )
            if result.body.get("user") != session.user:
                self.stats.violation("wrong user in session", f"{session.user}: {result.body.get('user')}")
            session.live_until = max(session.live_until, result.start + self.lifetime - self.touch_after - 1)
            return self.check_cookie(session, result)
        if result.kind == "403" or session_cookie(result) == "":
            self.gone(session, result)
            return False
        return True

    async def logout(self, tab: Browser, session: Session) -> bool:
        result = await self.request(tab, "POST", "/logout", session.sid, "logout")
        if result.kind != "ok":
            return False  # the user clicks "log out" again next time
        session.ended = "logout"
        self.stats.logouts += 1
        return True

    # -- around the users ----------------------------------------------------------------

    async def control_command(self, command: str) -> str:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.control), 5)
        try:
            writer.write(command.encode() + b"\nquit\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), 5)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        text = answer.decode().strip()
        if not text.startswith("ok"):
            raise RuntimeError(f"fault proxy refused {command!r}: {text}")
        return text

    async def fault(self) -> None:
        args = self.args
        await asyncio.sleep(max(0.0, args.cut_at - self.now()))
        self.stats.proxy_status["before cut"] = await self.control_command("status")
        first = "refuse on" if args.fault == "refuse" else "blackhole on"
        self.stats.cut = cut = self.now()  # before the commands: no failure can precede it
        await self.control_command(first)
        await self.control_command("drop")
        say(f"  t={cut:5.1f}s  database cut: drop + {first}")
        await asyncio.sleep(max(0.0, cut + args.outage - self.now()))
        await self.control_command("heal")
        self.stats.heal = self.now()  # after the answer: the heal is in effect
        say(f"  t={self.stats.heal:5.1f}s  healed")

    async def ping(self) -> None:
        tab = self.browser()
        try:
            while self.now() < self.stop_at:
                start = self.now()
                try:
                    status, _, _ = await asyncio.wait_for(tab.request("GET", "/ping", None), 5)
                    ok = status == 200
                except (TimeoutError, OSError, asyncio.IncompleteReadError, HTTPError, ValueError):
                    ok = False
                self.stats.pings.append((start, ok))
                await asyncio.sleep(0.25)
        finally:
            tab.close()

    async def lag(self) -> None:
        """How late this process's event loop wakes up: high values mean the client is the bottleneck."""
        while self.now() < self.stop_at:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            self.stats.lag.append(time.monotonic() - before - 0.1)

    async def progress(self) -> None:
        seen = 0
        while self.now() < self.stop_at:
            await asyncio.sleep(10)
            events = self.stats.events[seen:]
            seen += len(events)
            kinds = Counter(kind for _, _, kind, _ in events)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            ok = [latency for _, _, kind, latency in events if kind == "ok"]
            say(
                f"  t={self.now():5.1f}s  last 10s: {len(events) / 10:6.0f} req/s, 2xx p50/p99 "
                f"{percentile(ok, 0.5) * 1000:.0f}/{percentile(ok, 0.99) * 1000:.0f} ms  ({detail})"
            )

    async def run(self) -> None:
        args = self.args
        self.t0, self.t0_wall = time.monotonic(), time.time()
        self.stop_at = args.duration
        helpers = [asyncio.create_task(c) for c in (self.fault(), self.ping(), self.progress(), self.lag())]
        users = [asyncio.create_task(self.user(i)) for i in range(args.users)]
        try:
            done, pending = await asyncio.wait(users, timeout=args.duration + args.request_timeout + 10)
            for task in pending:
                task.cancel()
            if pending:
                self.stats.violation("user stuck past the end", f"{len(pending)} users cancelled")
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
            await asyncio.wait_for(helpers[0], 10)  # the fault task: raises if the proxy failed us
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        with contextlib.suppress(Exception):
            self.stats.proxy_status["end"] = await self.control_command("status")


# -- the checks after the run ------------------------------------------------------------


@dataclass
class Check:
    rows: int = 0
    rows_live: int = 0
    verified_sessions: int = 0
    verified_acked: int = 0
    exact: int = 0
    with_uncertain_applied: int = 0
    uncertain_total: int = 0
    uncertain_applied: int = 0
    lost_sessions: int = 0
    lost_increments: int = 0
    phantom_increments: int = 0
    resurrected: int = 0
    vanished: int = 0
    expired_unverified: int = 0
    expired_unverified_acked: int = 0
    orphans: int = 0


def verify(
    load: Load,
    args: argparse.Namespace,
    check_time: float,
    connect: Callable[[], pymysql.Connection] | None = None,
) -> Check:
    """Read every row of the table directly and hold each known session's counter to its bounds.

    ``connect`` opens the connection to read through (default: ``args.mysql_url``); the
    cluster soak passes one per Galera node, with causal reads on.
    """
    conn = connect() if connect is not None else admin_connection(args.mysql_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT session_key, session_data, session_expiry, session_owner FROM `{args.table}`"
            )
            fetched = cur.fetchall()
            cur.execute("SELECT UNIX_TIMESTAMP()")
            db_now = int(cur.fetchone()[0])
    finally:
        conn.close()
    rows = {
        key: (msgpack.unpackb(data, raw=False), int(expiry), owner) for key, data, expiry, owner in fetched
    }
    result = Check(rows=len(rows), rows_live=sum(1 for _, e, _ in rows.values() if e > db_now))
    stats = load.stats
    known: set[str] = set()
    for session in load.sessions:
        key = hash_id(session.sid)
        known.add(key)
        result.uncertain_total += session.uncertain
        row = rows.get(key)
        if row is None:
            if session.ended in ("logout", "logout?", "gone"):
                continue
            if check_time < session.live_until:
                result.vanished += 1
                stats.violation("live session missing", f"{session.user}, {session.acked} acknowledged")
            else:
                result.expired_unverified += 1
                result.expired_unverified_acked += session.acked
            continue
        data, expiry, owner = row
        if session.ended == "logout":
            result.resurrected += 1
            stats.violation("logged-out session back in the table", f"{session.user} {key[:12]}")
        if data.get("user") != session.user or owner != session.user:
            stats.violation("wrong user in row", f"{session.user}: {data.get('user')!r}/{owner!r}")
        stored = int(data.get("n", 0))
        result.verified_sessions += 1
        result.verified_acked += session.acked
        if stored < session.acked:
            result.lost_sessions += 1
            result.lost_increments += session.acked - stored
            stats.violation(
                "lost acknowledged increment",
                f"{session.user} {key[:12]}: stored {stored}, acknowledged {session.acked}",
            )
        elif stored > session.acked + session.uncertain:
            result.phantom_increments += stored - session.acked - session.uncertain
            stats.violation(
                "phantom increment",
                f"{session.user} {key[:12]}: stored {stored}, acknowledged {session.acked} "
                f"+ uncertain {session.uncertain}",
            )
        elif stored == session.acked:
            result.exact += 1
        else:
            result.with_uncertain_applied += 1
            result.uncertain_applied += stored - session.acked
        if session.ended == "gone" and expiry > db_now:
            stats.violation("server called a live row unknown", f"{session.user} {key[:12]}")
    result.orphans = sum(1 for key in rows if key not in known)
    if result.orphans > stats.login_uncertain:
        stats.violation(
            "unexplained rows",
            f"{result.orphans} rows no client knows, only {stats.login_uncertain} logins unanswered",
        )
    return result


def self_test(load: Load, args: argparse.Namespace, check_time: float) -> int:
    """Lose 5 acknowledged increments, add 3 phantom ones, delete 2 live rows: all must be caught."""
    live = [s for s in load.sessions if s.ended is None and s.live_until > check_time + 2]
    lose = [s for s in live if s.acked >= 1][:5]
    phantom = [s for s in live if s not in lose and s.uncertain == 0][:3]
    drop = [s for s in live if s not in lose and s not in phantom][:2]
    if len(lose) < 5 or len(phantom) < 3 or len(drop) < 2:
        say("self-test: not enough live sessions to damage")
        return 2
    conn = admin_connection(args.mysql_url)
    try:
        with conn.cursor() as cur:
            for session, n in [*((s, s.acked - 1) for s in lose), *((s, s.acked + 1) for s in phantom)]:
                data = msgpack.packb({"user": session.user, "n": n}, use_bin_type=True)
                cur.execute(
                    f"UPDATE `{args.table}` SET session_data = %s WHERE session_key = %s",
                    (data, hash_id(session.sid)),
                )
            for session in drop:
                cur.execute(f"DELETE FROM `{args.table}` WHERE session_key = %s", (hash_id(session.sid),))
    finally:
        conn.close()
    load.stats.violations.clear()
    check = verify(load, args, check_time)
    found = (check.lost_sessions, check.lost_increments, check.phantom_increments, check.vanished)
    say(
        f"self-test: damaged 5 rows (-1 each), 3 rows (+1 beyond the bound), deleted 2 live rows; "
        f"the check found lost {found[0]} rows / {found[1]} increments, phantom {found[2]}, "
        f"missing {found[3]}"
    )
    if found == (5, 5, 3, 2):
        say("self-test: PASS - the counter check caught exactly the damage")
        return 0
    say("self-test: FAIL - the counter check missed or invented damage")
    return 1


# -- the server log -------------------------------------------------------------------------


def read_server_log(path: Path, t0_wall: float, load: Load) -> dict[str, Any]:
    """Sweeps, backend errors and anything unexpected, placed on the soak's timeline."""
    cut, heal = load.stats.cut, load.stats.heal
    info: dict[str, Any] = {
        "sweeps": Counter(),
        "swept_rows": Counter(),
        "sweep_failures": Counter(),
        "backend_errors": Counter(),
        "backend_causes": Counter(),
        "first_backend_error": None,
        "last_backend_error": None,
        "messages": Counter(),
        "tracebacks": 0,
        "worker_pids": set(),
    }

    def phase(t: float) -> str:
        if cut is None or t < cut:
            return "before"
        if heal is None or t < heal:
            return "outage"
        return "after"

    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            info["tracebacks"] += 1
        parts = line.split(" ", 3)
        if len(parts) < 4 or not parts[1].isdigit():
            if "Exception in ASGI application" in line or line.startswith("ERROR"):
                info["messages"]["uvicorn: " + line[:80]] += 1
            continue
        try:
            t = float(parts[0]) - t0_wall
        except ValueError:
            continue
        info["worker_pids"].add(parts[1])
        level, message = parts[2], parts[3]
        if message.startswith("session sweep deleted"):
            info["sweeps"][phase(t)] += 1
            info["swept_rows"][phase(t)] += int(message.split()[3])
        elif message.startswith("session sweep failed"):
            info["sweep_failures"][phase(t)] += 1
        elif message.startswith("session backend error"):
            info["backend_errors"][phase(t)] += 1
            cause = " ".join(w for w in message[23:].split() if not any(c.isdigit() for c in w))
            info["backend_causes"][f"{phase(t)}: {cause[:90]}"] += 1
            if info["first_backend_error"] is None:
                info["first_backend_error"] = t
            info["last_backend_error"] = t
        else:
            key = f"{level} {message.split(':')[0][:60]}"
            key = " ".join(w for w in key.split() if not any(c.isdigit() for c in w))
            info["messages"][key] += 1
    return info


# -- the report --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def phase_of(t: float, cut: float, heal: float) -> str:
    return "before" if t < cut else "outage" if t < heal else "after"


def recovery(stats: Stats, duration: float) -> dict[str, Any]:
    cut, heal = stats.cut, stats.heal
    assert cut is not None and heal is not None
    out: dict[str, Any] = {}
    fails_after_cut = [e for e, _, k, _ in stats.events if k in FAILED and e >= cut]
    out["detect"] = (min(fails_after_cut) - cut) if fails_after_cut else None
    writes = [
        e - heal
        for e, route, k, lat in stats.events
        if k == "ok" and route in ("incr", "login") and e - lat >= heal
    ]
    out["first_write"] = min(writes) if writes else None
    late = [e for e, _, k, _ in stats.events if k in FAILED and e >= heal]
    out["last_failure"] = (max(late) - heal) if late else None
    out["failures_after_heal"] = len(late)
    # Success rate per 1-s bucket (by completion time); "normal" = the pre-cut rate (at most
    # 99.9 %). Recovered = from the end of the last bucket after the heal below normal on,
    # through the end of the run.
    buckets: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for e, _, k, _ in stats.events:
        if k in FAILED:
            buckets[int(e)][1] += 1
        elif k in ("ok", "403"):
            buckets[int(e)][0] += 1
    warm = min(10, int(cut) // 2)
    base_ok = sum(buckets[s][0] for s in range(warm, int(cut)))
    base_all = base_ok + sum(buckets[s][1] for s in range(warm, int(cut)))
    baseline = base_ok / base_all if base_all else 1.0
    normal = min(baseline, 0.999)
    out["baseline"] = baseline
    out["normal"] = None

    def below(s: int) -> bool:
        ok, bad = buckets[s]
        return ok + bad > 0 and ok / (ok + bad) < normal

    bad = [s for s in range(int(heal), int(duration) + 1) if below(s)]
    if not bad:
        out["normal"] = 0.0
    elif bad[-1] < int(duration) - 2:
        out["normal"] = bad[-1] + 1 - heal
    out["timeline"] = [
        (s, buckets[s][0], buckets[s][1])
        for s in range(max(0, int(cut) - 3), min(int(duration), int(heal) + 8))
    ]
    out["later_dips"] = [(s, buckets[s][0], buckets[s][1]) for s in bad if s >= int(heal) + 8]
    return out


def worker_lines(stats: Stats) -> list[str]:
    """After the heal, worker by worker: did each one come back?"""
    lines = []
    for pid in sorted(stats.workers):
        if pid in ("?", "-"):
            continue
        ok = stats.by_worker[pid, "after", "ok"]
        failed = sum(stats.by_worker[pid, "after", k] for k in FAILED)
        first = stats.first_write_by_worker.get(pid)
        lines.append(
            f"    worker {pid} after heal: {ok} answered 2xx, {failed} failed; first write heal + "
            + ("never" if first is None else f"{first * 1000:.0f} ms")
        )
    return lines


def fmt_s(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "never"
    return f"{value * 1000:.0f} ms" if unit == "ms" else f"{value:.1f} s"


def report(
    args: argparse.Namespace,
    load: Load,
    check: Check,
    log: dict[str, Any],
    rec: dict[str, Any],
    packages: dict[str, str],
    cpu: dict[str, float],
) -> tuple[list[str], dict[str, Any]]:
    stats = load.stats
    cut, heal = stats.cut or 0.0, stats.heal or 0.0
    events = stats.events
    served = [e for e in events if e[2] not in ("timeout", "connection")]
    by_phase: dict[str, Counter[str]] = {p: Counter() for p in PHASES}
    lat: dict[str, list[float]] = {p: [] for p in PHASES}
    for end, _, kind, latency in events:
        p = phase_of(end, cut, heal)
        by_phase[p][kind] += 1
        if kind == "ok":
            lat[p].append(latency)
    spans = {"before": cut, "outage": heal - cut, "after": args.duration - heal}
    routes = Counter(route for _, route, kind, _ in served)
    lines = [
        f"asgi_mysql_session soak: {args.users} users for {args.duration:g} s, "
        f"uvicorn --workers {args.workers}, think {args.think[0]:g}-{args.think[1]:g} s",
        f"max_lifetime {args.max_lifetime} s, sweeps every {args.gc_interval:g} s, "
        f"timeout {args.db_timeout:g} s, connect_timeout {args.connect_timeout:g} s"
        + (", /incr serialized" if args.serialize else ""),
        f"fault: drop + {args.fault} at t={cut:.1f} s for {heal - cut:.1f} s (healed at t={heal:.1f} s)",
        f"{os.cpu_count()} cores; " + ", ".join(f"{k} {v}" for k, v in packages.items()),
        "",
        f"requests served: {len(served)} ({len(served) / args.duration:.0f}/s); sent {len(events)}",
        "  by route: " + ", ".join(f"{r} {routes[r]}" for r in ROUTES),
        f"  by worker pid: {', '.join(f'{pid} {n}' for pid, n in sorted(stats.workers.items()))}",
        *worker_lines(stats),
        "  CPU (cores busy): "
        + ", ".join(f"{name} {value:.2f}" for name, value in cpu.items() if name != "cores")
        + f" of {cpu['cores']:.0f}; client event-loop lag p99 {percentile(stats.lag, 0.99) * 1000:.0f} ms, "
        f"max {max(stats.lag, default=0) * 1000:.0f} ms",
        "",
        f"{'outcome':40} {'before cut':>11} {'outage':>9} {'after heal':>11} {'total':>9}",
    ]
    for kind in KINDS:
        row = [by_phase[p][kind] for p in PHASES]
        lines.append(f"{KIND_TITLES[kind]:40} {row[0]:>11} {row[1]:>9} {row[2]:>11} {sum(row):>9}")
    if load.transport_errors:
        lines.append(
            "  connection errors: " + ", ".join(f"{k} {v}" for k, v in load.transport_errors.items())
        )
    rates = [sum(by_phase[p].values()) / max(spans[p], 1e-9) for p in PHASES]
    lines.append(f"{'requests/s':40} {rates[0]:>11.0f} {rates[1]:>9.0f} {rates[2]:>11.0f}")
    cells = [f"{percentile(lat[p], 0.5) * 1000:.0f}/{percentile(lat[p], 0.99) * 1000:.0f}" for p in PHASES]
    lines.append(f"{'2xx latency p50/p99 (ms)':40} {cells[0]:>11} {cells[1]:>9} {cells[2]:>11}")
    pings = stats.pings
    ping_out = [ok for t, ok in pings if cut <= t < heal]
    lines += [
        "",
        "recovery",
        f"  cut noticed (first failed request after the cut): {fmt_s(rec['detect'], 'ms')}",
        f"  first acknowledged session write started after heal: heal + {fmt_s(rec['first_write'], 'ms')}",
        f"  last failed request: heal + {fmt_s(rec['last_failure'])} ({rec['failures_after_heal']} failures "
        "completed after heal)",
        f"  success rate back to normal (>= {min(rec['baseline'], 0.999):.1%} in every second to the end): "
        f"heal + {fmt_s(rec['normal'])}",
        "  later seconds below normal (t: answered / failed): "
        + ("none" if not rec["later_dips"] else "  ".join(f"{s}:{ok}/{n}" for s, ok, n in rec["later_dips"])),
        f"  /ping (no session) during the outage: {sum(ping_out)}/{len(ping_out)} ok; "
        f"overall {sum(ok for _, ok in pings)}/{len(pings)}",
        "  per second around the cut (t: answered / failed): "
        + "  ".join(f"{s}:{ok}/{bad}" for s, ok, bad in rec["timeline"]),
        "",
        "sessions and sweeps",
        f"  logins acknowledged {stats.logins}, logouts {stats.logouts}, abandoned {stats.abandoned}, "
        f"expired while in use {stats.gone_expected}, logins unanswered {stats.login_uncertain}",
        f"  sweeps (server log): {sum(log['sweeps'].values())} deleting {sum(log['swept_rows'].values())} "
        f"expired rows (before cut {log['sweeps']['before']}/{log['swept_rows']['before']}, "
        f"after heal {log['sweeps']['after']}/{log['swept_rows']['after']}); "
        f"failed sweeps: {sum(log['sweep_failures'].values())} "
        f"(in the outage {log['sweep_failures']['outage']})",
        f"  backend errors logged: before {log['backend_errors']['before']}, outage "
        f"{log['backend_errors']['outage']}, after heal {log['backend_errors']['after']}; "
        f"tracebacks in the server log: {log['tracebacks']}",
    ]
    for cause, count in sorted(
        log["backend_causes"].items(), key=lambda kv: PHASES.index(kv[0].split(":")[0])
    ):
        lines.append(f"  backend error {count} x {cause}")
    for message, count in log["messages"].most_common(8):
        lines.append(f"  log: {count} x {message}")
    acked_total = sum(s.acked for s in load.sessions)
    ended = Counter(s.ended or "in use" for s in load.sessions)
    live_bad = sum(
        n
        for k, n in stats.violations.items()
        if "seen live" in k or k in ("read out of bounds", "counter went back")
    )
    lines += [
        "",
        f"counters: {acked_total} increments acknowledged in {len(load.sessions)} sessions "
        f"(at the end: {ended['in use']} in use, {ended['abandoned']} abandoned, "
        f"{ended['logout'] + ended['logout?']} logged out, {ended['gone']} expired in use)",
        f"  as they came: {stats.live_checked['incr']} /incr and {stats.live_checked['read']} /read answers "
        f"held to acknowledged <= n <= acknowledged + uncertain: {live_bad} out of bounds",
        "  every row read directly from MariaDB at the end:",
        f"    rows in the table: {check.rows} ({check.rows_live} unexpired)",
        f"    sessions verified: {check.verified_sessions}, "
        f"holding {check.verified_acked} acknowledged increments",
        f"      stored == acknowledged: {check.exact}; stored == acknowledged + some uncertain: "
        f"{check.with_uncertain_applied}",
        f"    lost acknowledged increments: {check.lost_increments} (in {check.lost_sessions} sessions); "
        f"phantom increments: {check.phantom_increments}",
        f"    uncertain increments (503/5xx/timeout/connection on /incr): {check.uncertain_total}, of which "
        f"{check.uncertain_applied} were found applied in verified rows",
        f"    logged-out sessions back in the table: {check.resurrected}; "
        f"live sessions missing: {check.vanished}",
        f"    expired and swept before the check (not verifiable): {check.expired_unverified} sessions, "
        f"{check.expired_unverified_acked} acknowledged increments",
        f"    rows no client knows (logins whose answer was lost): {check.orphans} "
        f"(<= {stats.login_uncertain} unanswered logins)",
    ]
    figures = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "packages": packages,
        "cpu": cpu,
        "client_lag_ms": {"p99": percentile(stats.lag, 0.99) * 1000, "max": max(stats.lag, default=0) * 1000},
        "served": len(served),
        "sent": len(events),
        "by_route": dict(routes),
        "by_worker": dict(stats.workers),
        "by_worker_phase_kind": {"/".join(k): v for k, v in stats.by_worker.items()},
        "first_write_by_worker": stats.first_write_by_worker,
        "by_phase": {p: dict(by_phase[p]) for p in PHASES},
        "latency_ms": {
            p: {"p50": percentile(lat[p], 0.5) * 1000, "p99": percentile(lat[p], 0.99) * 1000} for p in PHASES
        },
        "cut": cut,
        "heal": heal,
        "recovery": {k: v for k, v in rec.items() if k != "timeline"},
        "timeline": rec["timeline"],
        "sessions": {
            "logins": stats.logins,
            "logouts": stats.logouts,
            "abandoned": stats.abandoned,
            "expired_in_use": stats.gone_expected,
            "login_uncertain": stats.login_uncertain,
        },
        "sweeps": {k: dict(log[k]) for k in ("sweeps", "swept_rows", "sweep_failures", "backend_errors")},
        "log_messages": dict(log["messages"]),
        "backend_causes": dict(log["backend_causes"]),
        "tracebacks": log["tracebacks"],
        "check": vars(check),
        "acknowledged_total": acked_total,
        "sessions_total": len(load.sessions),
        "sessions_at_end": dict(ended),
        "live_checked": dict(stats.live_checked),
        "live_out_of_bounds": live_bad,
        "violations": dict(stats.violations),
        "examples": stats.examples,
        "proxy": stats.proxy_status,
        "transport_errors": dict(load.transport_errors),
    }
    return lines, figures


def failures(load: Load, check: Check, rec: dict[str, Any], log: dict[str, Any]) -> list[str]:
    reasons = [f"{n} x {kind}" for kind, n in load.stats.violations.items()]
    if rec["first_write"] is None:
        reasons.append("no session write succeeded after the database came back")
    stuck = [
        pid
        for pid in load.stats.workers
        if pid not in ("?", "-") and pid not in load.stats.first_write_by_worker
    ]
    if stuck:
        reasons.append(f"worker(s) {', '.join(stuck)} never wrote a session after the heal")
    if rec["normal"] is None:
        reasons.append("the success rate never returned to normal after the heal")
    if check.verified_sessions == 0:
        reasons.append("no session could be verified against the table")
    errors = sum(n for m, n in log["messages"].items() if m.startswith(("ERROR", "uvicorn")))
    if errors or log["tracebacks"]:
        reasons.append(f"server logged {errors} errors and {log['tracebacks']} tracebacks")
    five = sum(1 for _, _, k, _ in load.stats.events if k == "5xx")
    if five:
        reasons.append(f"{five} answers with a 5xx other than 503")
    return reasons


# -- main ----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("asgi_mysql_session", "uvicorn", "starlette", "aiomysql", "PyMySQL", "msgpack"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    found["python"] = sys.version.split()[0]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "asgi_mysql_session"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if rev:
            found["commit"] = rev + (" + uncommitted changes to the package" if dirty else "")
    return found


def run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="asgi-mysql-session-soak-"))
    # A last-resort bound on the whole run: cleanup still runs (finally) when it fires.
    bound = int(args.duration + args.request_timeout + 180)

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the soak exceeded its {bound}s bound")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (background job)
    signal.alarm(bound)
    proxy: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None
    table_made = False
    server_log = logdir / "server.log"
    outcome = 2
    load_box: list[Load] = []
    try:
        say(f"soak: logs in {logdir}")
        conn = admin_connection(args.mysql_url)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{session_sql.check_table_name(args.table)}`")
                cur.execute(session_sql.create_table(args.table))
                table_made = True
        finally:
            conn.close()
        target = urlsplit(args.mysql_url)
        proxy = subprocess.Popen(
            [
                sys.executable, str(ROOT / "tests" / "faultproxy.py"),
                "--listen", "127.0.0.1:0",
                "--target", f"{target.hostname or '127.0.0.1'}:{target.port or 3306}",
                "--control", "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            stderr=(logdir / "proxy.log").open("wb"),
            start_new_session=True,
        )  # fmt: skip
        line = read_line(proxy, 10)
        words = line.split()
        if len(words) != 4 or words[0] != "listening" or words[2] != "control":
            say(f"soak: the fault proxy did not start ({line!r})")
            return 2
        proxy_port = int(words[1].rpartition(":")[2])
        control = ("127.0.0.1", int(words[3].rpartition(":")[2]))
        say(f"soak: fault proxy pid {proxy.pid} on :{proxy_port}, control :{control[1]}")
        port = free_port()
        env = {
            **os.environ,
            "SOAK_MYSQL_URL": proxy_dsn(args.mysql_url, proxy_port, args),
            "SOAK_TABLE": args.table,
            "SOAK_MAX_LIFETIME": str(args.max_lifetime),
            "SOAK_GC_INTERVAL": str(args.gc_interval),
            "SOAK_SERIALIZE": "1" if args.serialize else "",
        }
        server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "app:app",
                "--app-dir", str(HERE),
                "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(args.workers),
                "--no-access-log", "--log-level", "warning", "--lifespan", "on",
                "--timeout-graceful-shutdown", "10",
                "--timeout-keep-alive", str(KEEP_ALIVE),
            ],
            stdout=subprocess.DEVNULL,
            stderr=server_log.open("wb"),
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        pids = wait_ready(port, args.workers, server)
        if not pids:
            say(f"soak: uvicorn did not come up; see {server_log}")
            return 2
        say(f"soak: uvicorn pid {server.pid} on :{port}, workers {', '.join(sorted(pids))}")
        say(
            f"soak: {args.users} users for {args.duration:g}s; the database is cut at "
            f"t={args.cut_at:g}s for {args.outage:g}s"
        )
        load = Load(args, port, control)
        load_box.append(load)
        groups = {
            "client": [os.getpid()],
            "uvicorn workers": children(server.pid),
            "fault proxy": [proxy.pid],
        }
        before = cpu_snapshot(groups)
        started = time.monotonic()
        run_loop(load.run())
        after = cpu_snapshot(groups)
        elapsed = time.monotonic() - started
        cpu = {k: (after[k] - before[k]) / elapsed for k in groups}
        cpu["whole machine"] = (after["machine busy"] - before["machine busy"]) / elapsed
        cpu["cores"] = (after["machine total"] - before["machine total"]) / elapsed
        say("soak: load over; stopping uvicorn, then checking every row")
        stop_process(server, "uvicorn", 20)
        check_time = time.monotonic() - load.t0
        if args.self_test:
            outcome = self_test(load, args, check_time)
            return outcome
        check = verify(load, args, check_time)
        log = read_server_log(server_log, load.t0_wall, load)
        rec = recovery(load.stats, args.duration)
        lines, figures = report(args, load, check, log, rec, versions(), cpu)
        reasons = failures(load, check, rec, log)
        say("")
        for text in lines:
            say(text)
        if load.stats.examples:
            say("")
            say("first violations:")
            for text in load.stats.examples:
                say(f"  {text}")
        say("")
        figures["result"] = "FAIL" if reasons else "PASS"
        figures["reasons"] = reasons
        (logdir / "figures.json").write_text(json.dumps(figures, indent=1))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
        if reasons:
            say("RESULT: FAIL - " + "; ".join(reasons))
            outcome = 1
        else:
            say("RESULT: PASS - no acknowledged increment lost, the service recovered by itself")
            outcome = 0
        return outcome
    except KeyboardInterrupt:
        say("soak: interrupted")
        return 2
    except Exception as exc:
        say(f"soak: could not run: {type(exc).__name__}: {exc}")
        return 2
    finally:
        signal.alarm(0)
        stop_process(server, "uvicorn", 20)
        stop_process(proxy, "fault proxy", 5)
        if table_made and not args.keep:
            with contextlib.suppress(pymysql.MySQLError):
                conn = admin_connection(args.mysql_url)
                try:
                    with conn.cursor() as cur:
                        cur.execute(f"DROP TABLE IF EXISTS `{args.table}`")
                finally:
                    conn.close()
        if load_box:
            (logdir / "failed-requests.tsv").write_text(
                "start\tend\troute\tstatus\tkind\tdetail\n" + "\n".join(load_box[0].failed) + "\n"
            )
        if outcome == 0 and not args.keep:
            for path in logdir.iterdir():
                path.unlink()
            logdir.rmdir()
        else:
            say(f"soak: logs kept in {logdir}")


def wait_ready(port: int, workers: int, server: subprocess.Popen[bytes]) -> set[str]:
    """Poll /ping on new connections until every worker answered (or 30 s); the pids seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
            if head.startswith("http/1.1 200"):
                for line in head.split("\r\n"):
                    if line.startswith("x-worker:"):
                        seen.add(line.split(":", 1)[1].strip())
                if len(seen) >= workers:
                    return seen
        time.sleep(0.05 if seen else 0.2)
    return seen if server.poll() is None else set()


if __name__ == "__main__":
    sys.exit(main())
