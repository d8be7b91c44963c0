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
from datetime import UTC, datetime
from typing import Any, TextIO

from .cli_options import PROG, build_parser
from .coordination import Cluster
from .driver import DriverWarning
from .errors import SessionConfigError, SessionError
from .ids import is_well_formed, log_id
from .provider import MySQLSessionProvider
from .schema import RowsConverted, SchemaReport, SessionSchema, UpgradeStep, schema_sql

logger = logging.getLogger("asgi_mysql_session")

Command = Callable[
    [MySQLSessionProvider, SessionSchema, argparse.Namespace, TextIO], Coroutine[Any, Any, int]
]


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
        schema = provider.schema(remedy=f"create it with `{PROG} init --table {provider.table}`")
        with warnings.catch_warnings():
            # Server notes such as "table already exists" (from IF [NOT] EXISTS) are expected.
            warnings.simplefilter("ignore", DriverWarning)
            return asyncio.run(COMMANDS[args.command](provider, schema, args, sys.stdout))
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
async def _opened(
    provider: MySQLSessionProvider, schema: SessionSchema
) -> AsyncIterator[MySQLSessionProvider]:
    """The provider opened, once the schema found its table usable (words the CLI's remedy)."""
    await schema.verify(create=False)
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


async def cmd_init(
    provider: MySQLSessionProvider, schema: SessionSchema, args: argparse.Namespace, out: TextIO
) -> int:
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


async def cmd_check(
    provider: MySQLSessionProvider, schema: SessionSchema, args: argparse.Namespace, out: TextIO
) -> int:
    return _report(await schema.check(), out)


async def cmd_upgrade(
    provider: MySQLSessionProvider, schema: SessionSchema, args: argparse.Namespace, out: TextIO
) -> int:
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


async def cmd_gc(
    provider: MySQLSessionProvider, schema: SessionSchema, args: argparse.Namespace, out: TextIO
) -> int:
    async with _opened(provider, schema) as provider:
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
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def cmd_stats(
    provider: MySQLSessionProvider, schema: SessionSchema, args: argparse.Namespace, out: TextIO
) -> int:
    async with _opened(provider, schema):
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


async def cmd_destroy(
    provider: MySQLSessionProvider, schema: SessionSchema, args: argparse.Namespace, out: TextIO
) -> int:
    sid: str | None = args.sid
    if sid == "-":
        sid = sys.stdin.readline().strip()
    if sid is not None and not is_well_formed(sid):
        print("no session with that id (it is not a well-formed session id)", file=out)
        return 1
    async with _opened(provider, schema) as provider:
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
