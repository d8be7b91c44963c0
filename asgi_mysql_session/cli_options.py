"""The CLI's command line: its commands, their options and help (argparse)."""

from __future__ import annotations

import argparse

PROG = "asgi-mysql-session"
#: Per-statement deadline once connected; ALTERs of big tables need long ones.
DEFAULT_TIMEOUT = 600.0


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
