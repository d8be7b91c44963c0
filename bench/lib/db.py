"""The bench's own SQL beside the package's: connections by DSN, the Com_* counters, the server's PID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql

from asgi_mysql_session.dsn import parse_dsn
from lib.cpumeter import command_name, processes_named

#: The statement kinds counted per request (Com_select ... Com_delete).
KINDS = ("select", "insert", "update", "delete")
#: What the server process is called.
SERVER_NAMES = ("mariadbd", "mysqld")


def connect(url: str, **options: Any) -> pymysql.Connection:
    """A pymysql connection to the DSN ``url`` (read as the provider reads it), autocommit on."""
    return pymysql.connect(**parse_dsn(url).pymysql_args(), autocommit=True, **options)


def query(conn: pymysql.Connection, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return list(cur.fetchall())


def com_counters(conn: pymysql.Connection) -> dict[str, int]:
    """The server's Com_select, Com_insert, Com_update and Com_delete so far (SHOW GLOBAL STATUS)."""
    names = ",".join(f"'Com_{kind}'" for kind in KINDS)
    rows = query(conn, f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
    return {str(name)[4:].lower(): int(str(value)) for name, value in rows}


def server_pid(conn: pymysql.Connection) -> int | None:
    """The PID of the server behind ``conn`` when it runs on this machine (for its CPU), else None.

    Its own pid file (``@@pid_file``, relative to ``@@datadir``) names it, if that process is
    a mariadbd or mysqld; when the file cannot be read, the one such process on the machine.
    With several (a local Galera cluster beside the shared server) and no readable pid file:
    None, rather than the CPU of another server.
    """
    pid_file, datadir = query(conn, "SELECT @@pid_file, @@datadir")[0]
    try:
        pid = int((Path(str(datadir)) / str(pid_file)).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    if pid is not None and command_name(pid) in SERVER_NAMES:
        return pid
    found = processes_named(*SERVER_NAMES)
    return found[0] if len(found) == 1 else None
