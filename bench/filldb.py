"""The bench table: create it, fill it fast with N sessions, clean up after logins, drop it.

Ids are minted like the provider mints them (``secrets.token_urlsafe(32)``), their SHA-256
hex is the primary key and the data is encoded with the package's own serializer, so the
rows are exactly what the middleware would have written. The raw ids go to a file, one per
line, for the load generator to rotate through.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import itsdangerous
import pymysql
from lib import db

from asgi_mysql_session import ddl, sql
from asgi_mysql_session.serializer import encode

INSERT = (
    "INSERT INTO `{table}` (session_key, session_data, session_expiry, session_version, "
    "session_created, session_owner) VALUES (%s, %s, %s, %s, %s, %s)"
)
BATCH = 5000
LIFETIME = 86400


#: MySQL's ER_TABLE_EXISTS_ERROR.
TABLE_EXISTS = 1050


def unique_table_name(prefix: str = "asgi_mysql_session_bench") -> str:
    """A table name of this run alone, e.g. asgi_mysql_session_bench_3f9c2a61d0be."""
    return f"{prefix}_{secrets.token_hex(6)}"


class BenchTable:
    """A table the bench creates, fills and drops; it never writes to one it did not create."""

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = sql.check_table_name(table)
        self.conn = db.connect(url, max_allowed_packet=64 * 1024 * 1024)
        #: True once create() made the table; only then may it be filled, emptied or dropped.
        self.owned = False
        #: Every pre-filled row is created at this second; rows made by the login workload
        #: are newer, which is how cleanup() finds them.
        self.created = int(time.time()) - 60

    def query(self, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return db.query(self.conn, statement, args)

    def create(self) -> None:
        """Create the table; a table of that name that already exists is left alone (SystemExit)."""
        statement = ddl.create_table(self.table).replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE", 1)
        try:
            self.query(statement)
        except pymysql.MySQLError as exc:
            if exc.args and exc.args[0] == TABLE_EXISTS:
                raise SystemExit(
                    f"bench: table `{self.table}` already exists and this run did not create it: "
                    "it is left alone (pass another --table, or leave --table out for a new name)"
                ) from None
            raise
        self.owned = True

    def _own(self, doing: str) -> None:
        if not self.owned:
            raise RuntimeError(f"bench: refusing to {doing} `{self.table}`: this run did not create it")

    def drop(self) -> None:
        """Drop the table if this run created it; a table it did not create is never dropped."""
        if self.owned:
            self.query(f"DROP TABLE IF EXISTS `{self.table}`")
            self.owned = False

    def truncate(self) -> None:
        self._own("empty")
        self.query(f"TRUNCATE TABLE `{self.table}`")

    def count(self) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM `{self.table}`")[0][0])

    def fill(
        self,
        count: int,
        *,
        ids_file: Path | None = None,
        expired: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Insert ``count`` sessions; returns their ids (and writes them to ``ids_file``).

        Rows go in in primary-key order: the keys are random hashes, and inserting them
        sorted appends to every index instead of splitting pages all over a table that is
        larger than the buffer pool (1,000,000 rows: ~15 s instead of ~160 s).
        """
        self._own("fill")
        now = int(time.time())
        expiry = 1_000_000_000 if expired else now + LIFETIME
        ids = [secrets.token_urlsafe(32) for _ in range(count)]
        keyed = sorted((hashlib.sha256(sid.encode()).hexdigest(), i) for i, sid in enumerate(ids))
        insert = INSERT.format(table=self.table)
        self.conn.autocommit(False)
        try:
            with self.conn.cursor() as cur:
                for start in range(0, count, BATCH):
                    rows = [
                        (key, encode(session_data(i)), expiry, 1, self.created, None)
                        for key, i in keyed[start : start + BATCH]
                    ]
                    cur.executemany(insert, rows)  # one multi-row INSERT per batch
                    done = start + len(rows)
                    if done % 50_000 == 0:
                        self.conn.commit()
                    if progress is not None:
                        progress(done)
            self.conn.commit()
        finally:
            self.conn.autocommit(True)
        if ids_file is not None:
            ids_file.write_text("\n".join(ids) + "\n")
        return ids

    def cleanup_new_rows(self) -> int:
        """Delete the rows the login workload created (newer than the pre-filled ones)."""
        self._own("delete rows of")
        total = 0
        while True:
            with self.conn.cursor() as cur:
                deleted = cur.execute(
                    f"DELETE FROM `{self.table}` WHERE session_created > %s LIMIT 20000", (self.created,)
                )
            total += int(deleted)
            if deleted < 20000:
                return total

    def counters(self) -> dict[str, int]:
        return db.com_counters(self.conn)

    def server_pids(self) -> list[int]:
        pid = db.server_pid(self.conn)
        return [] if pid is None else [pid]

    def server_info(self) -> dict[str, str]:
        version = str(self.query("SELECT VERSION()")[0][0])
        variables = dict(
            self.query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('innodb_buffer_pool_size','innodb_flush_log_at_trx_commit','max_connections')"
            )
        )
        return {"version": version, **{str(k): str(v) for k, v in variables.items()}}

    def close(self) -> None:
        self.conn.close()


#: The session shapes the bench can fill (``BENCH_SESSION`` or run.py's ``--session``).
SESSIONS = ("login", "one", "cart")


def session_kind() -> str:
    kind = os.environ.get("BENCH_SESSION", "login")
    if kind not in SESSIONS:
        raise SystemExit(f"bench: BENCH_SESSION must be one of {', '.join(SESSIONS)}, not {kind!r}")
    return kind


def login_session(user_id: int) -> dict[str, object]:
    """What a real app keeps after a login (about 100 bytes of msgpack): the bench's default."""
    return {
        "user_id": user_id,
        "name": f"user-{user_id:07d}",
        "roles": ["reader", "writer"],
        "csrf": secrets.token_hex(16),
        "counter": 0,
    }


def session_data(i: int, kind: str | None = None) -> dict[str, object]:
    """What every pre-filled session holds: ``login`` (default), ``one`` key, or an 8 KB ``cart``."""
    kind = kind or session_kind()
    if kind == "one":
        return {"user_id": i}
    session = login_session(i)
    if kind == "cart":  # 50 items of ~160 bytes: about 8 KB of msgpack
        session["cart"] = [
            {
                "sku": f"SKU-{i:07d}-{n:02d}",
                "title": f"item {n} " + "x" * 112,
                "qty": 1 + n % 3,
                "cents": 1999,
            }
            for n in range(50)
        ]
    return session


def signed_cookies(ids: list[str], secret: str, path: Path) -> None:
    """Starlette SessionMiddleware cookies holding the same data as the pre-filled rows."""
    signer = itsdangerous.TimestampSigner(secret)
    lines = []
    for i in range(len(ids)):
        lines.append(signer.sign(base64.b64encode(json.dumps(session_data(i)).encode())).decode())
    path.write_text("\n".join(lines) + "\n")
