"""Make sure a MariaDB/MySQL server answers at MYSQL_URL, starting or installing one if needed.

Used by `make test` and `make demo`. For a local address it starts the installed server
(start-stop-daemon, as the Debian package lays it out) and, when none is installed and we
are root, installs mariadb-server with apt-get, then lets root in over TCP with an empty
password and creates the database. A remote server is only waited for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pymysql

from asgi_mysql_session.dsn import parse_dsn

URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TARGET = parse_dsn(URL)
LOCAL = {"127.0.0.1", "localhost", "::1"}


def say(message: str) -> None:
    print(f"ensure_db: {message}", flush=True)


def connect(with_db: bool = True) -> pymysql.Connection:  # type: ignore[type-arg]
    args = TARGET.pymysql_args()
    if not with_db:
        args["database"] = None
    return pymysql.connect(**args, connect_timeout=3)


def probe() -> int | None:
    """None when the DSN works; otherwise the MySQL error code (2003 = nothing listening)."""
    try:
        connect().close()
        return None
    except pymysql.err.MySQLError as exc:
        return exc.args[0] if exc.args and isinstance(exc.args[0], int) else 2003


def run(*cmd: str) -> None:
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def start_local_server() -> None:
    if not os.path.exists("/usr/sbin/mariadbd"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            sys.exit("ensure_db: no MariaDB answers and none is installed; install mariadb-server")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "mariadb-server"], check=True, env=env)
    if os.geteuid() == 0:
        os.makedirs("/run/mysqld", exist_ok=True)
        shutil.chown("/run/mysqld", "mysql", "mysql")
    run("start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd")


def open_root_access() -> None:
    """A fresh Debian install lets root in only over the socket: allow TCP with no password."""
    database = TARGET.database
    statements = (
        "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket"
        " OR mysql_native_password USING PASSWORD('');"
        f"CREATE DATABASE IF NOT EXISTS `{database}`;"
    )
    run("mariadb", "-uroot", "-e", statements)


def main() -> None:
    host = TARGET.host
    code = probe()
    if code is None:
        say(f"server answers at {host}")
        return
    if host not in LOCAL:
        sys.exit(f"ensure_db: the server at {host} does not answer (error {code})")
    if code in (2002, 2003, 2006, 2013):
        say("no server answers locally; starting MariaDB")
        start_local_server()
        for _ in range(120):
            code = probe()
            if code not in (2002, 2003, 2006, 2013):
                break
            time.sleep(0.5)
    if code == 1049:  # the server answers but the database is missing
        conn = connect(with_db=False)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{TARGET.database}`")
        conn.close()
        code = probe()
    if code in (1045, 1698) and os.geteuid() == 0 and shutil.which("mariadb"):
        open_root_access()
        code = probe()
    if code is not None:
        sys.exit(f"ensure_db: cannot use {host} (MySQL error {code})")
    say(f"server answers at {host}")


if __name__ == "__main__":
    main()
