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
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymysql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(HERE.parent))  # bench/: lib

from checks import Check, admin_connection, drop_tables, make_tables, self_test, verify  # noqa: E402
from lib import MYSQL_URL, run_async  # noqa: E402
from lib.console import say  # noqa: E402
from lib.cpumeter import BUSY, TOTAL, CpuMeter  # noqa: E402
from lib.http import Browser  # noqa: E402
from lib.procs import Process, bound_run, children, keep_logs  # noqa: E402
from lib.report import git_revision, package_versions  # noqa: E402
from report import failures, read_server_log, recovery, report  # noqa: E402
from server import add_arguments, check_arguments, dsn_options, start_app  # noqa: E402
from users import KEEP_ALIVE, Users  # noqa: E402

PACKAGES = ("asgi_mysql_session", "uvicorn", "starlette", "aiomysql", "PyMySQL", "msgpack")


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
    p.add_argument("--max-lifetime", type=int, help="session idle lifetime in s (default 20, quick 10)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    p.add_argument("--serialize", action="store_true", help="run /incr in the middleware's serialized mode")
    p.add_argument("--mysql-url", default=MYSQL_URL)
    add_arguments(p, table="soak_session", pool="per worker")
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
    check_arguments(p, args)
    if args.max_lifetime < args.outage + 4:
        p.error("--max-lifetime must exceed --outage by a few seconds, or live sessions expire in the cut")
    return args


def proxy_dsn(url: str, port: int, args: argparse.Namespace) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return f"mysql://{netloc}{parts.path}?{dsn_options(args)}"


class Load(Users[Browser]):
    """The soak's users on one app, and the database cut through the fault proxy's control port."""

    def __init__(self, args: argparse.Namespace, port: int, control: tuple[str, int]) -> None:
        super().__init__(args)
        self.port = port
        self.control = control

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.port, idle=KEEP_ALIVE - 5)

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

    async def run(self) -> None:
        await super().run()
        with contextlib.suppress(Exception):
            self.stats.proxy_status["end"] = await self.control_command("status")


def versions() -> dict[str, str]:
    found = package_versions(PACKAGES)
    found["python"] = sys.version.split()[0]
    revision = git_revision(" + uncommitted changes to the package")
    if revision:
        found["commit"] = revision
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="asgi-mysql-session-soak-"))
    # A last-resort bound on the whole run: cleanup still runs (finally) when it fires.
    bound_run(int(args.duration + args.request_timeout + 180), "the soak")
    proxy: Process | None = None
    server: Process | None = None
    table_made = False
    outcome = 2
    load_box: list[Load] = []
    try:
        say(f"soak: logs in {logdir}")
        with contextlib.closing(admin_connection(args.mysql_url)) as conn:
            make_tables(conn, args.table)
            table_made = True
        target = urlsplit(args.mysql_url)
        proxy = Process(
            "fault proxy",
            [
                sys.executable, str(ROOT / "tests" / "faultproxy.py"),
                "--listen", "127.0.0.1:0",
                "--target", f"{target.hostname or '127.0.0.1'}:{target.port or 3306}",
                "--control", "127.0.0.1:0",
            ],
            logdir / "proxy.log",
            pipe=True,
        )  # fmt: skip
        line = proxy.read_line(10)
        words = line.split()
        if len(words) != 4 or words[0] != "listening" or words[2] != "control":
            say(f"soak: the fault proxy did not start ({line!r})")
            return 2
        proxy_port = int(words[1].rpartition(":")[2])
        control = ("127.0.0.1", int(words[3].rpartition(":")[2]))
        say(f"soak: fault proxy pid {proxy.pid} on :{proxy_port}, control :{control[1]}")
        dsn = proxy_dsn(args.mysql_url, proxy_port, args)
        server, port, pids = start_app(
            "uvicorn", dsn, args, logdir / "server.log", workers=args.workers, serialize=args.serialize
        )
        if not pids:
            say(f"soak: uvicorn did not come up; see {server.log}")
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
        meter = CpuMeter(groups)
        run_async(load.run())
        used = meter.cores()
        cpu = {k: used[k] for k in groups}
        cpu["whole machine"], cpu["cores"] = used[BUSY], used[TOTAL]
        say("soak: load over; stopping uvicorn, then checking every row")
        server.stop(20)
        check_time = time.monotonic() - load.t0
        if args.self_test:
            outcome = self_test(load, args, check_time)
            return outcome
        check = verify(load, args, check_time)
        log = read_server_log(server.log, load.t0_wall, load)
        rec = recovery(load.stats, args.duration)
        lines, figures = report(args, load, check, log, rec, versions(), cpu)
        outcome = conclude(load, check, rec, log, lines, figures, logdir, args.json)
        return outcome
    except KeyboardInterrupt:
        say("soak: interrupted")
        return 2
    except Exception as exc:
        say(f"soak: could not run: {type(exc).__name__}: {exc}")
        return 2
    finally:
        signal.alarm(0)
        if server is not None:
            server.stop(20)
        if proxy is not None:
            proxy.stop(5)
        if table_made and not args.keep:
            with (
                contextlib.suppress(pymysql.MySQLError),
                contextlib.closing(admin_connection(args.mysql_url)) as conn,
            ):
                drop_tables(conn, args.table)
        if load_box:
            (logdir / "failed-requests.tsv").write_text(
                "start\tend\troute\tstatus\tkind\tdetail\n" + "\n".join(load_box[0].failed) + "\n"
            )
        keep_logs(logdir, outcome != 0 or args.keep, "soak")


def conclude(
    load: Load,
    check: Check,
    rec: dict[str, Any],
    log: dict[str, Any],
    lines: list[str],
    figures: dict[str, Any],
    logdir: Path,
    json_path: Path | None,
) -> int:
    """Print the report and the verdict, write the figures; 0 when the soak passed, else 1."""
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
    if json_path:
        json_path.write_text(json.dumps(figures, indent=1))
    if reasons:
        say("RESULT: FAIL - " + "; ".join(reasons))
        return 1
    say("RESULT: PASS - no acknowledged increment lost, the service recovered by itself")
    return 0


if __name__ == "__main__":
    sys.exit(main())
