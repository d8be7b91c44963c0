"""The operator CLI: ``asgi-mysql-session COMMAND`` or ``python -m asgi_mysql_session COMMAND``.

Commands: ``init`` (create the table; ``init --print-sql`` only prints its DDL and needs no
database), ``check`` (is the table usable?), ``upgrade`` (convert the Go provider's table in
place), ``gc`` (sweep expired rows now), ``stats`` and ``destroy``.
The database comes from ``--dsn`` or ``$MYSQL_URL``; every SQL statement is in
:mod:`asgi_mysql_session.sql`.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import pymysql

from . import sql
from .coordination import Cluster, detect
from .dsn import parse_dsn
from .errors import SessionBackendError, SessionConfigError, SessionError, SessionSchemaError
from .ids import is_well_formed, log_id
from .provider import MySQLSessionProvider, _Link

PROG = "asgi-mysql-session"
#: Per-statement deadline once connected; ALTERs of big tables need long ones.
DEFAULT_TIMEOUT = 600.0
#: How long an ALTER of `upgrade` waits for the table's metadata lock before giving up.
LOCK_WAIT_SECONDS = 10
#: The columns a table made by the Go provider has (and `upgrade` needs).
LEGACY_COLUMNS = ("session_key", "session_data", "session_expiry")

logger = logging.getLogger("asgi_mysql_session")

Command = Callable[[MySQLSessionProvider, argparse.Namespace, TextIO], Awaitable[int]]


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
            sys.stdout.write(sql.schema_sql(args.table))
            if args.galera:
                sys.stdout.write("\n" + sql.lease_schema_sql(args.table))
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
        connect_timeout = parse_dsn(dsn).connect_timeout
        provider = MySQLSessionProvider(dsn, table=args.table, gc_interval=None, timeout=connect_timeout)
        provider._cli = True  # remedies in messages name this tool's commands
        with warnings.catch_warnings():
            # Server notes such as "table already exists" (from IF [NOT] EXISTS) are expected.
            warnings.simplefilter("ignore", pymysql.Warning)
            return asyncio.run(_run(COMMANDS[args.command], provider, args))
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


async def _run(command: Command, provider: MySQLSessionProvider, args: argparse.Namespace) -> int:
    return await command(provider, args, sys.stdout)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


# -- connections -----------------------------------------------------------------------


@asynccontextmanager
async def _raw_link(provider: MySQLSessionProvider, args: argparse.Namespace) -> AsyncIterator[_Link]:
    """One connection without the provider's table check, for tables that are missing or old."""
    provider._pool = await provider._create_pool()  # bounded by the DSN's connect_timeout
    provider.timeout = args.timeout
    try:
        async with provider._connection() as link:
            yield link
    finally:
        await provider._close_pool()


@asynccontextmanager
async def _opened(provider: MySQLSessionProvider, args: argparse.Namespace) -> AsyncIterator[None]:
    """The provider opened (so the table is checked), with the CLI's statement deadline."""
    await provider.open()
    provider.timeout = args.timeout
    try:
        yield
    finally:
        await provider.close()


# -- what a table looks like -----------------------------------------------------------


@dataclass(frozen=True)
class Column:
    data_type: str
    length: int | None
    nullable: bool
    collation: str | None


@dataclass(frozen=True)
class TableState:
    """A table as information_schema describes it."""

    engine: str | None
    collation: str | None
    rows_estimate: int
    columns: dict[str, Column]
    #: index name -> column names in order
    indexes: dict[str, tuple[str, ...]]


async def _inspect(link: _Link, m: sql.Maintenance) -> TableState | None:
    _, tables = await link.execute(m.table_info, (m.table,))
    if not tables:
        return None
    engine, collation, rows_estimate = tables[0]
    _, columns = await link.execute(m.column_info, (m.table,))
    _, index_rows = await link.execute(m.index_info, (m.table,))
    indexes: dict[str, list[str]] = {}
    for name, _unique, _position, column in index_rows:
        indexes.setdefault(str(name), []).append(str(column).lower())
    return TableState(
        engine=engine,
        collation=collation,
        rows_estimate=int(rows_estimate or 0),
        columns={
            str(name).lower(): Column(
                str(dtype).lower(), None if length is None else int(length), nullable == "YES", coll
            )
            for name, dtype, length, nullable, coll in columns
        },
        indexes={name: tuple(cols) for name, cols in indexes.items()},
    )


def _indexed(state: TableState, column: str) -> bool:
    return any(columns[0] == column for columns in state.indexes.values())


def diagnose(state: TableState) -> tuple[list[str], list[str]]:
    """(problems that stop the provider, cautions that do not)."""
    problems: list[str] = []
    cautions: list[str] = []
    for column, data_type in sql.REQUIRED_COLUMNS.items():
        found = state.columns.get(column)
        if found is None:
            problems.append(f"column {column} is missing")
        elif found.data_type != data_type:
            problems.append(f"column {column} is {found.data_type}, must be {data_type}")
    key = state.columns.get("session_key")
    if key is not None and key.length is not None and key.length < 64:
        problems.append(f"column session_key holds {key.length} characters, a SHA-256 hex needs 64")
    version = state.columns.get("session_version")
    if version is not None and version.nullable:
        problems.append("column session_version allows NULL: an upgrade did not finish, run `upgrade` again")
    primary = state.indexes.get("PRIMARY")
    if primary is None:
        problems.append("there is no primary key (it must be on session_key)")
    elif primary != ("session_key",):
        problems.append(f"the primary key is on ({', '.join(primary)}), it must be on session_key alone")
    if not _indexed(state, "session_expiry"):
        problems.append("there is no index on session_expiry (sweeps would scan the whole table)")
    if state.engine is not None and state.engine.lower() != "innodb":
        cautions.append(f"the engine is {state.engine}, InnoDB is expected (row locks, crash safety)")
    if key is not None and key.collation is not None and not key.collation.endswith("_bin"):
        cautions.append(f"session_key has collation {key.collation}, ascii_bin is expected")
    if "session_owner" in state.columns and not _indexed(state, "session_owner"):
        cautions.append("there is no index on session_owner (`destroy --owner` scans the whole table)")
    if sql.UPGRADE_PENDING_KEY in state.indexes:
        cautions.append(f"the index {sql.UPGRADE_PENDING_KEY} of an unfinished upgrade is still there")
    return problems, cautions


def _report(state: TableState, provider: MySQLSessionProvider, out: TextIO) -> int:
    problems, cautions = diagnose(state)
    where = f"table `{provider.table}` in database `{provider._database}`"
    if problems:
        print(f"{where} cannot be used by asgi_mysql_session:", file=out)
        for problem in problems:
            print(f"  - {problem}", file=out)
    else:
        print(f"{where} is OK ({state.engine}, about {state.rows_estimate} rows)", file=out)
    for warning in cautions:
        print(f"  warning: {warning}", file=out)
    if problems and "session_version" not in state.columns:
        print(f"if it was made by the Go provider, convert it with `{PROG} upgrade`", file=out)
    elif problems or cautions:
        print(f"`{PROG} upgrade` gives its columns and indexes the definitions of schema.sql", file=out)
    return 1 if problems else 0


# -- init and check ----------------------------------------------------------------------


async def _cluster_of(link: _Link) -> Cluster:
    """Galera or a single server, as the provider finds it at open."""
    try:
        return await detect(link.conn)
    except pymysql.err.MySQLError as exc:
        raise SessionBackendError(f"cannot tell whether this is a Galera cluster: {exc}") from exc


async def cmd_init(provider: MySQLSessionProvider, args: argparse.Namespace, out: TextIO) -> int:
    m = sql.maintenance(provider.table)
    async with _raw_link(provider, args) as link:
        before = await _inspect(link, m)
        await link.execute(m.create)  # IF NOT EXISTS: never touches an existing table
        if await _cluster_of(link) is Cluster.GALERA:
            await link.execute(sql.create_lease_table(provider.table))  # IF NOT EXISTS as well
            print(
                f"Galera cluster: lease table `{sql.lease_table_name(provider.table)}` is there "
                "(named locks are node-local on Galera)",
                file=out,
            )
    if before is None:
        print(f"created table `{provider.table}` in database `{provider._database}`", file=out)
        return 0
    print(
        f"table `{provider.table}` already exists in database `{provider._database}`: left as it is", file=out
    )
    return _report(before, provider, out)


async def cmd_check(provider: MySQLSessionProvider, args: argparse.Namespace, out: TextIO) -> int:
    m = sql.maintenance(provider.table)
    async with _raw_link(provider, args) as link:
        state = await _inspect(link, m)
    if state is None:
        raise SessionSchemaError(provider._missing_table_message(cli=True))
    return _report(state, provider, out)


# -- upgrade -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A table as SHOW describes it, to compare with the DDL's own temporary copy."""

    columns: dict[str, tuple[Any, ...]]
    indexes: dict[str, tuple[Any, ...]]


async def _shape(link: _Link, show_columns: str, show_index: str) -> Shape:
    _, columns = await link.execute(show_columns)
    _, index_rows = await link.execute(show_index)
    indexes: dict[str, list[Any]] = {}
    for row in index_rows:  # Table, Non_unique, Key_name, Seq_in_index, Column_name, _, _, Sub_part
        indexes.setdefault(str(row[2]), []).append((int(row[1]), str(row[4]).lower(), row[7]))
    return Shape(
        # Field, Type, Collation, Null, Key, Default, Extra, Privileges, Comment
        columns={str(r[0]).lower(): (r[1], r[2], r[3], r[5], r[6], r[8]) for r in columns},
        indexes={name: tuple(parts) for name, parts in indexes.items()},
    )


async def _reference_shape(link: _Link, m: sql.Maintenance) -> Shape:
    """The shape the DDL gives on this server, from a TEMPORARY table only this connection sees."""
    await link.execute(m.drop_reference)
    await link.execute(m.create_reference)
    try:
        return await _shape(link, m.show_reference_columns, m.show_reference_index)
    finally:
        await link.execute(m.drop_reference)


def _conform_plan(
    m: sql.Maintenance, state: TableState, current: Shape, reference: Shape
) -> tuple[str, list[str]] | None:
    """The ALTER that brings the table to the DDL, and why; None if nothing differs."""
    reasons: list[str] = []
    for name, _ in m.column_definitions:
        if name not in current.columns:
            reasons.append(f"added {name}")
        elif current.columns[name] != reference.columns[name]:
            reasons.append(f"redefined {name}")
    drop: list[str] = []
    add: list[str] = []
    for name, _ in m.key_definitions:
        have = current.indexes.get(name)
        if have != reference.indexes[name]:
            if have is not None:
                drop.append(name)
            add.append(name)
            reasons.append(f"{'rebuilt' if have is not None else 'added'} index {name}")
    if sql.UPGRADE_PENDING_KEY in current.indexes:
        drop.append(sql.UPGRADE_PENDING_KEY)
        reasons.append(f"dropped index {sql.UPGRADE_PENDING_KEY}")
    if (state.engine or "").lower() != m.engine.lower():
        reasons.append(f"engine {state.engine} -> {m.engine}")
    if (state.collation or "").lower() != m.collation.lower():
        reasons.append(f"default collation {state.collation} -> {m.collation}")
    if not reasons:
        return None
    return m.conform(frozenset(current.columns), tuple(drop), tuple(add)), reasons


async def _step(link: _Link, doing: str, statement: str, args: tuple[Any, ...] = ()) -> int:
    try:
        count, _ = await link.execute(statement, args)
    except SessionBackendError as exc:
        raise SessionBackendError(
            f"upgrade stopped while {doing}: {exc} (nothing was lost; run upgrade again to resume)"
        ) from exc
    return count


async def cmd_upgrade(provider: MySQLSessionProvider, args: argparse.Namespace, out: TextIO) -> int:
    m = sql.maintenance(provider.table)
    table = provider.table
    changed = False
    async with _raw_link(provider, args) as link:
        state = await _inspect(link, m)
        if state is None:
            raise SessionSchemaError(provider._missing_table_message(cli=True))
        await link.execute(m.set_lock_wait, (LOCK_WAIT_SECONDS,))
        # No session_version: the Go provider's table, whose keys are raw ids. Adding the
        # column NULL-able marks every row as still to convert; conversion sets it to 1.
        if "session_version" not in state.columns:
            lacking = [column for column in LEGACY_COLUMNS if column not in state.columns]
            if lacking:
                raise SessionSchemaError(
                    f"table `{table}` is not a session table (it has no {', '.join(lacking)}); "
                    "nothing was changed"
                )
            _, rows = await link.execute(m.count_rows)
            engine = state.engine or "unknown engine"
            if engine.lower() != "innodb" and await _cluster_of(link) is Cluster.GALERA:
                # Galera replicates InnoDB rows only: converting a MyISAM table in place would
                # apply row changes that the other nodes cannot find (error 1032), and the
                # cluster votes nodes out. Copy into a new InnoDB table and swap it in instead.
                print(
                    f"table `{table}` has the Go provider's schema ({engine}, {rows[0][0]} rows on this "
                    "node) on a Galera cluster: copying it into a new InnoDB table",
                    file=out,
                )
                await _copy_legacy(link, m, args, out)
                return _report(await _inspected(link, m), provider, out)
            print(
                f"table `{table}` has the Go provider's schema ({state.engine}, {rows[0][0]} rows): "
                "upgrading it in place",
                file=out,
            )
            key_length = state.columns["session_key"].length or 64
            missing = frozenset(sql.REQUIRED_COLUMNS) - frozenset(state.columns)
            await _step(link, "adding columns", m.prepare_legacy(missing, key_length))
            print(
                f"  added {', '.join(c for c in sql.REQUIRED_COLUMNS if c in missing)}; engine InnoDB",
                file=out,
            )
            changed = True
            state = await _inspect(link, m)
            assert state is not None
        version = state.columns.get("session_version")
        if version is not None and version.nullable:
            converted = await _convert_rows(link, m, args, out)
            data = "emptied their unreadable data" if args.drop_data else "kept their data"
            print(
                f"  converted {converted} rows: key = SHA-256 of the stored id, "
                f"deadline = last write + {args.max_lifetime}s; {data}",
                file=out,
            )
            changed = True
        current = await _shape(link, m.show_columns, m.show_index)
        plan = _conform_plan(m, state, current, await _reference_shape(link, m))
        if plan is not None:
            statement, reasons = plan
            await _step(link, "applying the schema.sql definitions", statement)
            print(f"  applied the schema.sql definitions: {', '.join(reasons)}", file=out)
            changed = True
            state = await _inspect(link, m)
            assert state is not None
    if not changed:
        print(
            f"table `{table}` in database `{provider._database}` is already up to date: nothing to do",
            file=out,
        )
        return 0
    return _report(state, provider, out)


async def _inspected(link: _Link, m: sql.Maintenance) -> TableState:
    state = await _inspect(link, m)
    assert state is not None
    return state


async def _copy_legacy(link: _Link, m: sql.Maintenance, args: argparse.Namespace, out: TextIO) -> None:
    """Galera and a non-InnoDB Go table: CREATE the new table, INSERT ... SELECT the converted
    rows into it, then one atomic RENAME TABLE swaps it in; the old table is kept aside."""
    new, backup = m.copy_names()
    _, found = await link.execute(m.table_info, (backup,))
    if found:
        raise SessionSchemaError(
            f"table `{backup}` exists (kept by an earlier upgrade?): rename or drop it, then run upgrade "
            "again; nothing was changed"
        )
    await _step(link, "clearing an unfinished copy", f"DROP TABLE IF EXISTS `{new}`")
    await _step(link, "creating the new table", sql.create_table(new))
    copied = await _step(
        link, "copying rows", m.copy_legacy(new, keep_data=not args.drop_data), (args.max_lifetime,)
    )
    await _step(link, "swapping the tables", m.swap(new, backup))
    data = "emptied their unreadable data" if args.drop_data else "kept their data"
    print(
        f"  copied {copied} rows into InnoDB: key = SHA-256 of the stored id, deadline = last write + "
        f"{args.max_lifetime}s; {data}",
        file=out,
    )
    print(
        f"  swapped it in with one RENAME TABLE; the old table is kept as `{backup}` (drop it once you "
        "are satisfied). Galera does not replicate MyISAM rows: rows the Go application wrote "
        "through other nodes are only there, and were not copied",
        file=out,
    )


async def _convert_rows(link: _Link, m: sql.Maintenance, args: argparse.Namespace, out: TextIO) -> int:
    statement = m.convert_rows_drop_data if args.drop_data else m.convert_rows_keep_data
    _, rows = await link.execute(m.count_pending)
    progress = Progress(out, f"converting rows of `{m.table}`", total=int(rows[0][0]))
    while True:
        count = await _step(link, "converting rows", statement, (args.max_lifetime, args.batch_size))
        progress.add(count)
        if count < args.batch_size:
            break
    progress.close()
    return progress.count


# -- gc ------------------------------------------------------------------------------------


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


async def cmd_gc(provider: MySQLSessionProvider, args: argparse.Namespace, out: TextIO) -> int:
    async with _opened(provider, args):
        if args.max_lifetime is not None or args.absolute_lifetime is not None:
            shortened = await provider.shorten(args.max_lifetime, args.absolute_lifetime, args.batch_size)
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


def _iso(timestamp: object) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(int(str(timestamp)), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


async def collect_stats(provider: MySQLSessionProvider) -> dict[str, Any]:
    m = sql.maintenance(provider.table)
    now = provider.now()
    _, live = await provider._execute(m.live_stats, (now,))
    _, expired = await provider._execute(m.expired_stats, (now,))
    _, sizes = await provider._execute(m.size_percentiles, (now,))
    count, with_owner, owners, earliest, latest = live[0]
    expired_count, oldest_expired = expired[0]
    p50, p90, p99, largest = sizes[0]
    return {
        "table": provider.table,
        "database": provider._database,
        "now": _iso(now),
        "live": int(count),
        "expired": int(expired_count),
        "with_owner": int(with_owner),
        "owners": int(owners),
        "data_bytes": {"p50": _int(p50), "p90": _int(p90), "p99": _int(p99), "max": _int(largest)},
        "deadlines": {"earliest": _iso(earliest), "latest": _iso(latest)},
        "oldest_expired_deadline": _iso(oldest_expired),
    }


async def cmd_stats(provider: MySQLSessionProvider, args: argparse.Namespace, out: TextIO) -> int:
    async with _opened(provider, args):
        stats = await collect_stats(provider)
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


async def cmd_destroy(provider: MySQLSessionProvider, args: argparse.Namespace, out: TextIO) -> int:
    sid: str | None = args.sid
    if sid == "-":
        sid = sys.stdin.readline().strip()
    if sid is not None and not is_well_formed(sid):
        print("no session with that id (it is not a well-formed session id)", file=out)
        return 1
    async with _opened(provider, args):
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
