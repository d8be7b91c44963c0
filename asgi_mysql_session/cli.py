"""The operator CLI: ``asgi-mysql-session COMMAND`` or ``python -m asgi_mysql_session COMMAND``.

Commands: ``init`` (create the table; ``init --print-sql`` only prints its DDL and needs no
database), ``check`` (is the table usable?), ``upgrade`` (convert the Go provider's table in
place), ``gc`` (sweep expired rows now), ``stats`` and ``destroy``.
The database comes from ``--dsn`` or ``$MYSQL_URL``. A thin layer over public APIs: the
table's work is :class:`~asgi_mysql_session.schema.SessionSchema`'s, sessions are the provider's;
this module parses arguments, words the output and picks the exit code.

Exit codes: 0 success; 1 a runtime failure, a table that fails ``check`` or a session that
was not found; 2 a usage or configuration error (bad option, bad DSN); 130 interrupted.
Errors are one line on stderr, never a traceback (``-v`` adds the library's log lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, TextIO

import pymysql

from . import MySQLSessionProvider
from .coordination import Cluster
from .errors import SessionConfigError, SessionError
from .ids import is_well_formed, log_id
from .schema import RowsConverted, SchemaReport, SessionSchema, UpgradeStep, schema_sql

PROG = "asgi-mysql-session"
#: Per-statement deadline once connected; ALTERs of big tables need long ones.
DEFAULT_TIMEOUT = 600.0

logger = logging.getLogger("asgi_mysql_session")

Command = Callable[[SessionSchema, argparse.Namespace, TextIO], Coroutine[Any, Any, int]]


# -- the command line ----------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The connection options, accepted before and after the command name."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--dsn",
        default=default(None),
        help="mysql://user:password@host:port/database (default: $MYSQL_URL); query options as for "
        "the provider, e.g. ?connect_timeout=3 (the default is 5 seconds)",
    )
    parser.add_argument("--table", default=default("session"), help="session table name (default: session)")
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"deadline of each statement once connected (default: {DEFAULT_TIMEOUT:g}); "
        "raise it to upgrade very large tables",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="show the library's log lines"
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate the asgi_mysql_session table in MySQL/MariaDB.",
        epilog="exit codes: 0 ok, 1 runtime failure / failed check / session not found, "
        "2 usage or configuration error, 130 interrupted",
    )
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser(
        "init",
        parents=[common],
        help="create the session table (idempotent), or print its DDL",
        description="Create the table with the DDL of schema.sql; "
        "an existing table is left as it is and checked.",
    )
    init.add_argument(
        "--print-sql",
        action="store_true",
        help="only print the DDL (schema.sql for --table) to apply by hand; connects to nothing, "
        "needs no DSN",
    )
    init.add_argument(
        "--galera",
        action="store_true",
        help="with --print-sql: also print the lease table a Galera cluster needs (init itself "
        "creates it when it finds a Galera node)",
    )
    commands.add_parser(
        "check",
        parents=[common],
        help="check the table's columns and indexes",
        description="Exit 0 if the provider can use the table, 1 with the list of problems otherwise.",
    )
    upgrade = commands.add_parser(
        "upgrade",
        parents=[common],
        help="convert a table made by the Go provider, in place",
        description=(
            "Convert a session table made by the Go provider (session_key, session_data, session_expiry "
            "= time of the last write) to this package's schema without losing rows: keys become the "
            "SHA-256 of the stored ids, session_expiry becomes a deadline (last write + --max-lifetime), "
            "columns and indexes are added and the table becomes InnoDB. A table without "
            "session_version is taken to be the Go provider's. Safe to re-run: an interrupted upgrade "
            "resumes and never hashes a key twice; an up-to-date table is left alone. Stop the Go "
            "application first. The Go provider's session data (gob) cannot be read here, so every "
            "user starts with an empty session once (that is, is logged out)."
        ),
    )
    upgrade.add_argument(
        "--max-lifetime",
        type=_positive_int,
        default=3600,
        metavar="SECONDS",
        help="the Go application's session lifetime (gclifetime); default 3600",
    )
    upgrade.add_argument(
        "--drop-data",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="empty the unreadable Go session data (default), so rows read as empty sessions; with "
        "--no-drop-data it is kept and the provider deletes each such row (logging a warning) "
        "the first time it is read",
    )
    upgrade.add_argument(
        "--batch-size", type=_positive_int, default=10000, help="rows converted per statement (default 10000)"
    )

    gc = commands.add_parser(
        "gc",
        parents=[common],
        help="delete expired rows now",
        description="Delete every expired row now, in batches on the expiry index.",
    )
    gc.add_argument("--batch-size", type=_positive_int, default=1000, help="rows per DELETE (default 1000)")
    gc.add_argument(
        "--max-lifetime",
        type=_positive_int,
        metavar="SECONDS",
        help="first bring every live session's deadline down to at most now + SECONDS (apply a "
        "lowered idle lifetime at once, e.g. after an incident)",
    )
    gc.add_argument(
        "--absolute-lifetime",
        type=_positive_int,
        metavar="SECONDS",
        help="first end every session created more than SECONDS ago (deadline at most creation + SECONDS)",
    )

    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="counts, data sizes and deadlines",
        description="Live and expired sessions, data size percentiles of live sessions, "
        "deadlines (UTC) and owners.",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    destroy = commands.add_parser(
        "destroy",
        parents=[common],
        help="end one session, or all sessions of an owner",
        description="End the session with id SID (use - to read the id from stdin, keeping it out of "
        "the shell history), exit 1 if there is none; or end every session of --owner.",
    )
    target = destroy.add_mutually_exclusive_group(required=True)
    target.add_argument("sid", nargs="?", metavar="SID", help="the session id as the client holds it")
    target.add_argument("--owner", metavar="ID", help="end every session bound to this owner")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse already explained (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command == "init" and args.print_sql:
        try:
            sys.stdout.write(schema_sql(args.table, galera=args.galera))
        except SessionConfigError as exc:
            return _fail(str(exc), 2)
        return 0
    dsn = args.dsn or os.environ.get("MYSQL_URL")
    if not dsn:
        return _fail(
            "no database: pass --dsn mysql://user:password@host:port/database or set MYSQL_URL "
            f"(`{PROG} init --print-sql` prints the DDL without one)",
            2,
        )
    handler: logging.Handler = logging.NullHandler()  # no stray "last resort" warnings on stderr
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    previous_level = logger.level
    if args.verbose:
        logger.setLevel(logging.INFO)
    try:
        provider = MySQLSessionProvider(dsn, table=args.table, gc_interval=None, timeout=args.timeout)
        # A missing table's remedy names this tool's command, not create_table=True.
        schema = SessionSchema(provider, remedy=f"create it with `{PROG} init --table {provider.table}`")
        with warnings.catch_warnings():
            # Server notes such as "table already exists" (from IF [NOT] EXISTS) are expected.
            warnings.simplefilter("ignore", pymysql.Warning)
            return asyncio.run(COMMANDS[args.command](schema, args, sys.stdout))
    except SessionConfigError as exc:
        return _fail(str(exc), 2)
    except SessionError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


@asynccontextmanager
async def _opened(schema: SessionSchema) -> AsyncIterator[MySQLSessionProvider]:
    """The provider opened, once the schema found its table usable (words the CLI's remedy)."""
    await schema.verify(create=False)
    provider = schema.provider
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


class Progress:
    """A one-line counter redrawn in place, only when ``out`` is a terminal."""

    def __init__(self, out: TextIO, label: str, total: int | None = None) -> None:
        self.out = out
        self.label = label
        self.total = total
        self.count = 0
        self.batches = 0
        self._shown = False
        self._last = 0.0
        try:
            self.enabled = bool(out.isatty())
        except (AttributeError, ValueError):
            self.enabled = False

    def add(self, rows: int) -> None:
        self.count += rows
        self.batches += 1
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            of = f" of {self.total}" if self.total is not None else ""
            self.out.write(f"\r\x1b[K{self.label}: {self.count}{of} rows, {self.batches} batches")
            self.out.flush()
            self._shown = True

    def close(self) -> None:
        if self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._shown = False


# -- init, check, upgrade ------------------------------------------------------------------------


def _report(report: SchemaReport, out: TextIO) -> int:
    where = f"table `{report.table}` in database `{report.database}`"
    if report.problems:
        print(f"{where} cannot be used by asgi_mysql_session:", file=out)
        for problem in report.problems:
            print(f"  - {problem}", file=out)
    else:
        print(f"{where} is OK ({report.engine}, about {report.rows_estimate} rows)", file=out)
    for warning in report.warnings:
        print(f"  warning: {warning}", file=out)
    if report.problems and report.legacy:
        print(f"if it was made by the Go provider, convert it with `{PROG} upgrade`", file=out)
    elif report.problems or report.warnings:
        print(f"`{PROG} upgrade` gives its columns and indexes the definitions of schema.sql", file=out)
    return 0 if report.ok else 1


async def cmd_init(schema: SessionSchema, args: argparse.Namespace, out: TextIO) -> int:
    created = await schema.create()
    report = await schema.check()
    if report.cluster is Cluster.GALERA:
        print(
            f"Galera cluster: lease table `{schema.lease_table}` is there "
            "(named locks are node-local on Galera)",
            file=out,
        )
    if created:
        print(f"created table `{report.table}` in database `{report.database}`", file=out)
        return 0
    print(f"table `{report.table}` already exists in database `{report.database}`: left as it is", file=out)
    return _report(report, out)


async def cmd_check(schema: SessionSchema, args: argparse.Namespace, out: TextIO) -> int:
    return _report(await schema.check(), out)


async def cmd_upgrade(schema: SessionSchema, args: argparse.Namespace, out: TextIO) -> int:
    counter: Progress | None = None

    def show(event: str | UpgradeStep | RowsConverted) -> None:
        nonlocal counter
        if isinstance(event, RowsConverted):
            if counter is None:
                counter = Progress(out, f"converting rows of `{schema.table}`", total=event.total)
            counter.add(event.batch)
            return
        if counter is not None:
            counter.close()
        print(f"  {event.message}" if isinstance(event, UpgradeStep) else event, file=out)

    try:
        result = await schema.upgrade(
            max_lifetime=args.max_lifetime,
            drop_data=args.drop_data,
            batch_size=args.batch_size,
            progress=show,
        )
    finally:
        if counter is not None:
            counter.close()
    if not result.changed:
        print(
            f"table `{schema.table}` in database `{result.check.database}` is already up to date: "
            "nothing to do",
            file=out,
        )
        return 0
    return _report(result.check, out)


# -- gc ------------------------------------------------------------------------------------


async def cmd_gc(schema: SessionSchema, args: argparse.Namespace, out: TextIO) -> int:
    async with _opened(schema) as provider:
        if args.max_lifetime is not None or args.absolute_lifetime is not None:
            shortened = await schema.apply_policy(args.max_lifetime, args.absolute_lifetime, args.batch_size)
            policy = ", ".join(
                f"{name} {value}s"
                for name, value in (
                    ("max lifetime", args.max_lifetime),
                    ("absolute lifetime", args.absolute_lifetime),
                )
                if value is not None
            )
            print(f"applied {policy}: {shortened} live sessions got an earlier deadline", file=out)
        started = time.perf_counter()
        progress = Progress(out, f"sweeping `{provider.table}`")
        try:
            deleted = await provider.sweep(batch_size=args.batch_size, on_batch=progress.add)
        finally:
            progress.close()
        elapsed = time.perf_counter() - started
    print(
        f"deleted {deleted or 0} expired rows from `{provider.table}` in {elapsed:.2f}s "
        f"({progress.batches} batch{'' if progress.batches == 1 else 'es'} of up to {args.batch_size})",
        file=out,
    )
    return 0


# -- stats -----------------------------------------------------------------------------------


def _iso(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def cmd_stats(schema: SessionSchema, args: argparse.Namespace, out: TextIO) -> int:
    async with _opened(schema):
        found = await schema.stats()
    stats: dict[str, Any] = {
        "table": found.table,
        "database": found.database,
        "now": _iso(found.now),
        "live": found.live,
        "expired": found.expired,
        "with_owner": found.with_owner,
        "owners": found.owners,
        "data_bytes": {
            "p50": found.data_p50,
            "p90": found.data_p90,
            "p99": found.data_p99,
            "max": found.data_max,
        },
        "deadlines": {"earliest": _iso(found.earliest_deadline), "latest": _iso(found.latest_deadline)},
        "oldest_expired_deadline": _iso(found.oldest_expired_deadline),
    }
    if args.json:
        print(json.dumps(stats, sort_keys=True), file=out)
        return 0
    size = stats["data_bytes"]
    deadlines = stats["deadlines"]
    lines = [
        f"sessions in `{stats['table']}` (database `{stats['database']}`) at {stats['now']}",
        f"  live:       {stats['live']} "
        f"({stats['with_owner']} with an owner, {stats['owners']} distinct owners)",
        f"  expired:    {stats['expired']} not swept yet"
        + (f" (oldest deadline {stats['oldest_expired_deadline']})" if stats["expired"] else ""),
    ]
    if stats["live"]:
        lines.append(
            f"  data size:  p50 {size['p50']} B, p90 {size['p90']} B, "
            f"p99 {size['p99']} B, max {size['max']} B"
        )
        lines.append(f"  deadlines:  earliest {deadlines['earliest']}, latest {deadlines['latest']}")
    print("\n".join(lines), file=out)
    return 0


# -- destroy -----------------------------------------------------------------------------------


async def cmd_destroy(schema: SessionSchema, args: argparse.Namespace, out: TextIO) -> int:
    sid: str | None = args.sid
    if sid == "-":
        sid = sys.stdin.readline().strip()
    if sid is not None and not is_well_formed(sid):
        print("no session with that id (it is not a well-formed session id)", file=out)
        return 1
    async with _opened(schema) as provider:
        if sid is None:
            ended = await provider.destroy_owner(args.owner)
            print(f"ended {ended} session{'' if ended == 1 else 's'} of owner {args.owner!r}", file=out)
            return 0
        existed = await provider.destroy(sid)
    if existed:
        print(f"ended session {log_id(sid)}", file=out)
        return 0
    print("no session with that id", file=out)
    return 1


COMMANDS: dict[str, Command] = {
    "init": cmd_init,
    "check": cmd_check,
    "upgrade": cmd_upgrade,
    "gc": cmd_gc,
    "stats": cmd_stats,
    "destroy": cmd_destroy,
}
