"""The soaks' simulated users: each a browser tab's loop of login, increments, reads, logout.

``Users`` runs ``--users`` of them against the app for ``--duration`` seconds (ramp-up,
think time, one request at a time on a keep-alive connection of its own, its own session
cookie), holds every answer to the counter bounds as it comes (``acknowledged <= n <=
acknowledged + uncertain``) and keeps what happened in ``Stats``. A soak subclasses it with
the tab its users browse with (``browser()``) and the fault it causes (``fault()``):
bench/soak/soak.py the fault proxy's cut, bench/soak/cluster_soak.py the node kills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from lib.console import say
from lib.http import HTTPError
from lib.stats import percentile

from asgi_mysql_session.ids import hash_id

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


class Tab(Protocol):
    """What a user browses with: lib.http.Browser, or the cluster soak's pair of them."""

    async def request(
        self, method: str, path: str, cookie: str | None
    ) -> tuple[int, dict[str, list[str]], bytes]: ...

    def close(self) -> None: ...


TabT = TypeVar("TabT", bound=Tab)


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

    def phase(self, t: float) -> str:
        """Where ``t`` (soak clock) falls: before the cut, in the outage, or after the heal."""
        if self.cut is None or t < self.cut:
            return "before"
        return "outage" if self.heal is None or t < self.heal else "after"


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


class Users(Generic[TabT]):
    """The users of one soak run, and what they saw (``stats``, ``sessions``, ``failed``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
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

    def browser(self) -> TabT:
        """A new tab for one user (or the pinger)."""
        raise NotImplementedError

    async def fault(self) -> None:
        """The fault the soak causes, on the soak's clock (``now()``); it raises if it could not."""
        raise NotImplementedError

    async def request(self, tab: TabT, method: str, path: str, sid: str | None, route: str) -> Result:
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
        heal = stats.heal
        stats.by_worker[worker, stats.phase(end), kind] += 1
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

    async def browse(self, tab: TabT, rnd: random.Random, name: str) -> None:
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

    async def login(self, tab: TabT, name: str) -> Session | None:
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

    async def incr(self, tab: TabT, session: Session) -> bool:
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

    async def read(self, tab: TabT, session: Session) -> bool:
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

    async def logout(self, tab: TabT, session: Session) -> bool:
        result = await self.request(tab, "POST", "/logout", session.sid, "logout")
        if result.kind != "ok":
            return False  # the user clicks "log out" again next time
        session.ended = "logout"
        self.stats.logouts += 1
        return True

    # -- around the users ----------------------------------------------------------------
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
                f"{percentile(ok, 50) * 1000:.0f}/{percentile(ok, 99) * 1000:.0f} ms  ({detail})"
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
            await asyncio.wait_for(helpers[0], 10)  # the fault task: raises if the fault failed
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
