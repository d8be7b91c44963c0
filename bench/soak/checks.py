"""The soak's table: made fresh before the load, every row read back after it and held to its bounds.

``verify`` reads every row directly (``session_key`` = SHA-256 hex of the id,
``session_data`` msgpack) and holds each known session's counter to ``acknowledged <= stored
<= acknowledged + uncertain``; ``self_test`` damages rows behind the server's back and checks
that ``verify`` finds exactly that damage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pymysql
from lib import db
from lib.console import say
from users import Users

from asgi_mysql_session import ddl as session_ddl
from asgi_mysql_session import sql as session_sql
from asgi_mysql_session.ids import hash_id


def admin_connection(url: str) -> pymysql.Connection:
    return db.connect(url, connect_timeout=5, read_timeout=30)


def make_tables(conn: pymysql.Connection, table: str, *, lease: bool = False) -> None:
    """Drop and create the session table (and its lease table, which a Galera cluster requires)."""
    table = session_sql.check_table_name(table)
    drop_tables(conn, table, lease=lease)
    db.query(conn, session_ddl.create_table(table))
    if lease:
        db.query(conn, session_ddl.create_lease_table(table))


def drop_tables(conn: pymysql.Connection, table: str, *, lease: bool = False) -> None:
    db.query(conn, f"DROP TABLE IF EXISTS `{table}`")
    if lease:
        db.query(conn, f"DROP TABLE IF EXISTS `{session_sql.lease_table_name(table)}`")


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
    load: Users[Any],
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


def self_test(load: Users[Any], args: argparse.Namespace, check_time: float) -> int:
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
