"""The operator CLI against a real MariaDB: init, check, upgrade, gc, stats, destroy, errors.

``main()`` runs its own event loop (asyncio.run), so these tests are plain functions.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import msgpack
import pytest
from conftest import MYSQL_URL, Database

from asgi_mysql_session import MySQLSessionProvider, SaveResult
from asgi_mysql_session.cli import main
from asgi_mysql_session.ddl import SCHEMA
from asgi_mysql_session.dsn import parse_dsn
from asgi_mysql_session.schema import schema_sql
from asgi_mysql_session.upgrade import upgrade_statements

GO_SCHEMA = (
    "CREATE TABLE `{table}` (`session_key` char(64) NOT NULL, `session_data` blob, "
    "`session_expiry` int(11) unsigned NOT NULL, PRIMARY KEY (`session_key`)) "
    "ENGINE=MyISAM DEFAULT CHARSET=utf8"
)
FAR_FUTURE = 4_000_000_000  # 2096: live whatever the clock says
LONG_AGO = 1_000_000_000  # 2001


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--dsn", MYSQL_URL, *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def sha(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def insert(
    db: Database, table: str, key: str, expiry: int, data: bytes = b"\x80", owner: str | None = None
) -> None:
    db.query(
        f"INSERT INTO `{table}` (session_key, session_data, session_expiry, session_created, session_owner) "
        "VALUES (%s, %s, %s, %s, %s)",
        (key, data, expiry, expiry - 100, owner),
    )


def shape(db: Database, table: str) -> tuple[object, ...]:
    """Columns, indexes and table options, for comparing two tables."""
    columns = [
        (r[0], r[1], r[2], r[3], r[5], r[6], r[8]) for r in db.query(f"SHOW FULL COLUMNS FROM `{table}`")
    ]
    indexes = sorted((r[2], r[3], r[4], r[1]) for r in db.query(f"SHOW INDEX FROM `{table}`"))
    options = db.query(
        "SELECT ENGINE, TABLE_COLLATION, TABLE_COMMENT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        (table,),
    )
    return columns, indexes, options


@pytest.fixture
def other_table(db: Database) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    db.query(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def go_table(db: Database, table: str) -> dict[str, int]:
    """A table made by the Go provider: raw ids as keys, last-write times as session_expiry."""
    db.query(GO_SCHEMA.format(table=table))
    now = int(time.time())
    rows = {
        "Qx3nT0aZbC9dEfGhIjKlMnOpQrStUvWxYz0123456_-": now - 10,  # token_urlsafe style, live
        "0123456789abcdef0123456789abcdef": now - 100,  # hex id (the Go default), live
        "fedcba9876543210fedcba9876543210": now - 7200,  # written 2h ago: dead after 1h
        "ABCDEFabcdef0123ABCDEFabcdef0123": now - 5,  # data NULL
    }
    for sid, last_write in rows.items():
        data = None if sid.startswith("ABC") else b"\x0c\xff\x81\x03\x01gob-encoded"
        db.query(f"INSERT INTO `{table}` VALUES (%s, %s, %s)", (sid, data, last_write))
    return rows


# -- the command line ------------------------------------------------------------------------


def test_python_dash_m_help_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asgi_mysql_session", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: asgi-mysql-session")
    for command in ("init", "check", "upgrade", "gc", "stats", "destroy"):
        assert command in result.stdout


def test_unreachable_server_fails_with_one_line_and_no_noise() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asgi_mysql_session", "--dsn", "mysql://root@127.0.0.1:1/test", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("asgi-mysql-session: error: cannot connect to mysql://root@127.0.0.1:1/test")


def test_unreachable_server_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = main(["--dsn", "mysql://root@127.0.0.1:1/test?connect_timeout=2", "stats"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot connect" in err and "Traceback" not in err
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("http://root@127.0.0.1/test", "scheme must be mysql://"),
        ("mysql://root:s3cr#et@127.0.0.1/test", "percent-encode"),
        ("mysql://root@127.0.0.1:3306/", "must name a database"),
        ("mysql://root@127.0.0.1/test?bogus=1", "unknown option 'bogus'"),
        ("mysql://root@127.0.0.1:99999/test", "invalid MySQL DSN"),
    ],
)
def test_bad_dsn_is_a_usage_error(capsys: pytest.CaptureFixture[str], dsn: str, message: str) -> None:
    assert main(["--dsn", dsn, "check"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert len(captured.err.splitlines()) == 1 and "Traceback" not in captured.err


def test_no_dsn_at_all_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MYSQL_URL", raising=False)
    assert main(["check"]) == 2
    assert "MYSQL_URL" in capsys.readouterr().err


def test_dsn_comes_from_mysql_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, table: str
) -> None:
    monkeypatch.setenv("MYSQL_URL", MYSQL_URL)
    assert main(["--table", table, "init"]) == 0
    # Options are accepted after the command name too.
    assert main(["check", "--table", table]) == 0
    assert "is OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["destroy"],
        ["destroy", "some-session-id-1234", "--owner", "ada"],
        ["gc", "--batch-size", "0"],
        ["upgrade", "--max-lifetime", "soon"],
        ["--timeout", "-1", "check"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(["--dsn", MYSQL_URL, *argv]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def test_bad_table_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--table", "session; DROP TABLE x", "check")
    assert code == 2 and "invalid table name" in err


@pytest.mark.parametrize(
    "command", [["check"], ["upgrade"], ["gc"], ["stats"], ["destroy", "--owner", "ada"]]
)
def test_missing_table_points_at_init(
    capsys: pytest.CaptureFixture[str], table: str, command: list[str]
) -> None:
    code, _, err = run(capsys, "--table", table, *command)
    assert code == 1
    assert f"`{table}` does not exist" in err and "asgi-mysql-session init" in err
    assert len(err.splitlines()) == 1


# -- init and check --------------------------------------------------------------------------


def test_init_creates_the_table_and_twice_is_fine(
    capsys: pytest.CaptureFixture[str], db: Database, table: str
) -> None:
    code, out, _ = run(capsys, "--table", table, "init")
    assert code == 0 and f"created table `{table}`" in out
    indexes = {row[2] for row in db.query(f"SHOW INDEX FROM `{table}`")}
    assert indexes == {"PRIMARY", "session_expiry", "session_owner"}
    insert(db, table, sha("kept-across-init-0001"), FAR_FUTURE)

    code, out, _ = run(capsys, "--table", table, "init")
    assert code == 0
    assert "already exists" in out and "is OK" in out
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(1,)]


def test_init_print_sql_needs_no_database_and_prints_the_packaged_schema(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MYSQL_URL", raising=False)
    assert main(["init", "--print-sql"]) == 0
    captured = capsys.readouterr()
    assert captured.out == SCHEMA and captured.err == ""
    # --table before or after the command; an unreachable DSN is never used.
    for argv in (
        ["--table", "my_sessions", "init", "--print-sql"],
        ["init", "--print-sql", "--table", "my_sessions"],
    ):
        assert main(["--dsn", "mysql://nobody@192.0.2.1:1/none", *argv]) == 0
        assert capsys.readouterr().out == schema_sql("my_sessions")
    assert "CREATE TABLE IF NOT EXISTS `my_sessions` (" in schema_sql("my_sessions")


def test_init_print_sql_refuses_a_bad_table_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--print-sql", "--table", "x`; DROP TABLE y"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid table name" in captured.err


def test_the_printed_ddl_makes_the_same_table_as_init(
    capsys: pytest.CaptureFixture[str], db: Database, table: str, other_table: str
) -> None:
    assert main(["init", "--print-sql", "--table", other_table]) == 0
    db.query(capsys.readouterr().out)  # as a DBA would apply it: comments, statement and ';'
    assert run(capsys, "--table", table, "init")[0] == 0
    assert shape(db, table) == shape(db, other_table)


def test_init_makes_the_same_table_as_the_provider(
    capsys: pytest.CaptureFixture[str], db: Database, table: str, other_table: str
) -> None:
    assert run(capsys, "--table", table, "init")[0] == 0

    async def create() -> None:
        async with MySQLSessionProvider(MYSQL_URL, table=other_table, create_table=True, gc_interval=None):
            pass

    asyncio.run(create())
    assert shape(db, table) == shape(db, other_table)


def test_check_passes_on_a_fresh_table(capsys: pytest.CaptureFixture[str], table: str) -> None:
    run(capsys, "--table", table, "init")
    code, out, _ = run(capsys, "--table", table, "check")
    assert code == 0
    assert f"table `{table}` in database `{parse_dsn(MYSQL_URL).database}` is OK" in out
    assert "warning" not in out


def test_check_names_the_problems_of_a_go_table(
    capsys: pytest.CaptureFixture[str], table: str, go_table: dict[str, int]
) -> None:
    code, out, _ = run(capsys, "--table", table, "check")
    assert code == 1
    assert "cannot be used" in out
    assert "column session_data is blob, must be mediumblob" in out
    for column in ("session_version", "session_created", "session_owner"):
        assert f"column {column} is missing" in out
    assert "no index on session_expiry" in out
    assert "engine is MyISAM" in out
    assert "asgi-mysql-session upgrade" in out


def test_check_flags_a_missing_expiry_index_and_a_wrong_primary_key(
    capsys: pytest.CaptureFixture[str], db: Database, table: str
) -> None:
    run(capsys, "--table", table, "init")
    db.query(
        f"ALTER TABLE `{table}` DROP KEY session_expiry, DROP PRIMARY KEY, "
        "ADD PRIMARY KEY (session_key, session_expiry)"
    )
    code, out, _ = run(capsys, "--table", table, "check")
    assert code == 1
    assert "primary key is on (session_key, session_expiry)" in out
    assert "no index on session_expiry" in out  # a key where it is second does not count
    db.query(f"ALTER TABLE `{table}` DROP PRIMARY KEY, ADD PRIMARY KEY (session_key)")
    code, out, _ = run(capsys, "--table", table, "check")
    assert code == 1 and "primary key" not in out and "no index on session_expiry" in out
    db.query(f"ALTER TABLE `{table}` ADD KEY by_deadline (session_expiry, session_owner)")
    assert run(capsys, "--table", table, "check")[0] == 0  # any index led by session_expiry


def test_init_on_a_go_table_leaves_it_alone_and_says_upgrade(
    capsys: pytest.CaptureFixture[str], db: Database, table: str, go_table: dict[str, int]
) -> None:
    code, out, _ = run(capsys, "--table", table, "init")
    assert code == 1
    assert "already exists" in out and "asgi-mysql-session upgrade" in out
    assert db.query(f"SELECT COUNT(*) FROM `{table}` WHERE session_key = %s", (next(iter(go_table)),)) == [
        (1,)
    ]


# -- upgrade -----------------------------------------------------------------------------------


def test_upgrade_converts_a_go_table_in_place(
    capsys: pytest.CaptureFixture[str], db: Database, table: str, other_table: str, go_table: dict[str, int]
) -> None:
    code, out, _ = run(capsys, "--table", table, "upgrade")
    assert code == 0, out
    assert "Go provider's schema (MyISAM, 4 rows)" in out
    assert "converted 4 rows" in out and "is OK" in out

    rows = db.query(
        f"SELECT session_key, session_data, session_expiry, session_version, session_created, session_owner "
        f"FROM `{table}`"
    )
    assert len(rows) == len(go_table)  # every row kept, dead ones too (gc takes those)
    by_key = {row[0]: row[1:] for row in rows}
    for sid, last_write in go_table.items():
        # Found under the SHA-256 of the id, the deadline is last write + max lifetime, the
        # unreadable data is gone and the creation time is the last write (not 0).
        assert by_key[sha(sid)] == (b"", last_write + 3600, 1, last_write, None)
        assert not any(sid in repr(row) for row in rows)

    # The same table as `init` makes, and `check` agrees.
    run(capsys, "--table", other_table, "init")
    assert shape(db, table) == shape(db, other_table)
    assert run(capsys, "--table", table, "check")[0] == 0

    # A second upgrade changes nothing: no key is hashed twice.
    code, out, _ = run(capsys, "--table", table, "upgrade")
    assert code == 0
    assert "already up to date: nothing to do" in out
    assert {row[0] for row in db.query(f"SELECT session_key FROM `{table}`")} == {sha(s) for s in go_table}


def test_the_provider_serves_upgraded_sessions(
    capsys: pytest.CaptureFixture[str], table: str, go_table: dict[str, int]
) -> None:
    assert run(capsys, "--table", table, "upgrade")[0] == 0
    live, _, dead, _ = go_table

    async def use() -> None:
        async with MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None) as provider:
            assert await provider.exist(live)
            assert not await provider.exist(dead)
            store = await provider.read(live)
            assert not store.is_new and dict(store) == {}  # logged out once, same id
            store["user"] = "ada"
            assert await store.release() == SaveResult.UPDATED
            again = await provider.read(live)
            assert dict(again) == {"user": "ada"}
            assert again.expiry > provider.now()  # the creation time does not cut it short

    asyncio.run(use())


def test_upgrade_shows_its_progress_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, table: str, go_table: dict[str, int]
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "--table", table, "upgrade", "--batch-size", "1")
    assert code == 0, out
    assert f"\r\x1b[Kconverting rows of `{table}`: 1 of 4 rows, 1 batches" in out
    # The counter is wiped before the next line: "converted" starts a line of its own.
    assert "\r\x1b[K  converted 4 rows" in out


def test_upgrade_can_keep_the_go_data(
    capsys: pytest.CaptureFixture[str], db: Database, table: str, go_table: dict[str, int]
) -> None:
    code, out, _ = run(capsys, "--table", table, "upgrade", "--no-drop-data", "--max-lifetime", "600")
    assert code == 0 and "kept their data" in out
    for sid, last_write in go_table.items():
        data, expiry = db.query(
            f"SELECT session_data, session_expiry FROM `{table}` WHERE session_key = %s", (sha(sid),)
        )[0]
        assert expiry == last_write + 600
        assert data == (b"" if sid.startswith("ABC") else b"\x0c\xff\x81\x03\x01gob-encoded")

    first = next(iter(go_table))

    async def read() -> None:
        async with MySQLSessionProvider(MYSQL_URL, table=table, gc_interval=None) as provider:
            store = await provider.read(first)  # gob is not msgpack: dropped on read
            assert store.is_new

    asyncio.run(read())
    assert db.query(f"SELECT COUNT(*) FROM `{table}` WHERE session_key = %s", (sha(first),)) == [(0,)]


def test_an_interrupted_upgrade_resumes_without_hashing_twice(
    capsys: pytest.CaptureFixture[str], db: Database, table: str, go_table: dict[str, int]
) -> None:
    m = upgrade_statements(table)
    # Stopped after the first ALTER and one converted row...
    db.query(m.prepare_legacy(frozenset({"session_version", "session_created", "session_owner"}), 64))
    db.query(m.convert_rows_drop_data, (3600, 1))
    # ...while the Go application was still writing.
    late = "a-late-go-write-00000000000000"
    db.query(
        f"INSERT INTO `{table}` (session_key, session_data, session_expiry) VALUES (%s, '', %s)", (late, 5)
    )
    code, out, _ = run(capsys, "--table", table, "check")
    assert code == 1 and "an upgrade did not finish" in out

    code, out, _ = run(capsys, "--table", table, "upgrade")
    assert code == 0, out
    assert "converted 4 rows" in out
    keys = {row[0] for row in db.query(f"SELECT session_key FROM `{table}`")}
    assert keys == {sha(s) for s in [*go_table, late]}
    assert run(capsys, "--table", table, "upgrade")[1].endswith("nothing to do\n")


def test_upgrade_of_a_current_table_is_a_no_op(
    capsys: pytest.CaptureFixture[str], db: Database, table: str
) -> None:
    run(capsys, "--table", table, "init")
    insert(db, table, sha("current-session-0001"), FAR_FUTURE)
    before = db.query(f"SELECT * FROM `{table}`")
    code, out, _ = run(capsys, "--table", table, "upgrade")
    assert code == 0 and "nothing to do" in out
    assert db.query(f"SELECT * FROM `{table}`") == before


def test_upgrade_restores_a_dropped_index(
    capsys: pytest.CaptureFixture[str], db: Database, table: str
) -> None:
    run(capsys, "--table", table, "init")
    db.query(f"ALTER TABLE `{table}` DROP KEY session_owner")
    code, out, _ = run(capsys, "--table", table, "check")
    assert code == 0 and "warning: there is no index on session_owner" in out
    assert "asgi-mysql-session upgrade` gives its columns and indexes" in out
    code, out, _ = run(capsys, "--table", table, "upgrade")
    assert code == 0 and "added index session_owner" in out
    assert "session_owner" in {row[2] for row in db.query(f"SHOW INDEX FROM `{table}`")}


def test_upgrade_refuses_a_table_that_is_not_a_session_table(
    capsys: pytest.CaptureFixture[str], db: Database, table: str
) -> None:
    db.query(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, session_key CHAR(64))")
    code, _, err = run(capsys, "--table", table, "upgrade")
    assert code == 1
    assert "not a session table" in err and "session_data, session_expiry" in err
    assert [row[0] for row in db.query(f"SHOW COLUMNS FROM `{table}`")] == ["id", "session_key"]


# -- gc, stats, destroy ----------------------------------------------------------------------


def test_gc_deletes_only_expired_rows(capsys: pytest.CaptureFixture[str], db: Database, table: str) -> None:
    run(capsys, "--table", table, "init")
    for i in range(5):
        insert(db, table, sha(f"expired-session-{i:04}"), LONG_AGO + i)
    live = {sha(f"live-session-{i:04}") for i in range(3)}
    for key in live:
        insert(db, table, key, FAR_FUTURE)
    code, out, _ = run(capsys, "--table", table, "gc", "--batch-size", "2")
    assert code == 0
    assert out.startswith(f"deleted 5 expired rows from `{table}` in ")
    assert "(3 batches of up to 2)" in out
    assert "\r" not in out  # no progress display when stdout is not a terminal
    assert {row[0] for row in db.query(f"SELECT session_key FROM `{table}`")} == live


def test_gc_shows_progress_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: Database, table: str
) -> None:
    run(capsys, "--table", table, "init")
    for i in range(3):
        insert(db, table, sha(f"expired-session-{i:04}"), LONG_AGO)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "--table", table, "gc", "--batch-size", "1")
    assert code == 0
    assert f"\r\x1b[Ksweeping `{table}`: 1 rows, 1 batches" in out
    assert out.splitlines()[-1].endswith("(4 batches of up to 1)")
    assert "deleted 3 expired rows" in out


@pytest.fixture
def known_sessions(capsys: pytest.CaptureFixture[str], db: Database, table: str) -> None:
    run(capsys, "--table", table, "init")
    owners = ["alice"] * 5 + ["bob"] * 3 + ["carol"] * 2
    for n in range(1, 101):  # live rows with 1..100 bytes of data
        owner = owners[n - 1] if n <= len(owners) else None
        insert(db, table, sha(f"live-session-{n:04}"), FAR_FUTURE + n, b"x" * n, owner)
    for n in range(4):  # expired rows are not in the sizes or the owner counts
        insert(db, table, sha(f"dead-session-{n:04}"), LONG_AGO + n, b"y" * 5000, "dave")


@pytest.mark.usefixtures("known_sessions")
def test_stats_json(capsys: pytest.CaptureFixture[str], table: str) -> None:
    code, out, _ = run(capsys, "--table", table, "stats", "--json")
    assert code == 0
    stats = json.loads(out)
    now = stats.pop("now")
    assert (
        abs(datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() - time.time()) < 60
    )
    assert stats == {
        "table": table,
        "database": parse_dsn(MYSQL_URL).database,
        "live": 100,
        "expired": 4,
        "with_owner": 10,
        "owners": 3,
        "data_bytes": {"p50": 50, "p90": 90, "p99": 99, "max": 100},
        "deadlines": {"earliest": iso(FAR_FUTURE + 1), "latest": iso(FAR_FUTURE + 100)},
        "oldest_expired_deadline": iso(LONG_AGO),
    }


@pytest.mark.usefixtures("known_sessions")
def test_stats_text(capsys: pytest.CaptureFixture[str], table: str) -> None:
    code, out, _ = run(capsys, "--table", table, "stats")
    assert code == 0
    assert "live:       100 (10 with an owner, 3 distinct owners)" in out
    assert f"expired:    4 not swept yet (oldest deadline {iso(LONG_AGO)})" in out
    assert "p50 50 B, p90 90 B, p99 99 B, max 100 B" in out
    assert f"earliest {iso(FAR_FUTURE + 1)}, latest {iso(FAR_FUTURE + 100)}" in out


def test_stats_of_an_empty_table(capsys: pytest.CaptureFixture[str], table: str) -> None:
    run(capsys, "--table", table, "init")
    code, out, _ = run(capsys, "--table", table, "stats", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["live"] == 0 and stats["expired"] == 0
    assert stats["data_bytes"] == {"p50": None, "p90": None, "p99": None, "max": None}


def test_destroy_one_session(capsys: pytest.CaptureFixture[str], db: Database, table: str) -> None:
    run(capsys, "--table", table, "init")
    sid, other = "k9vO0tq3W1Xh2mXf4D0T3Rj6Tz8mQ7pLs5bN1cV0a2E", "another-session-id-00000001"
    insert(db, table, sha(sid), FAR_FUTURE, msgpack.packb({"user": "ada"}))
    insert(db, table, sha(other), FAR_FUTURE)
    code, out, _ = run(capsys, "--table", table, "destroy", sid)
    assert code == 0 and out.startswith("ended session ") and sid not in out
    assert {row[0] for row in db.query(f"SELECT session_key FROM `{table}`")} == {sha(other)}

    code, out, _ = run(capsys, "--table", table, "destroy", sid)
    assert code == 1 and out == "no session with that id\n"
    code, out, _ = run(capsys, "--table", table, "destroy", "not an id")
    assert code == 1 and "not a well-formed session id" in out


def test_destroy_reads_the_id_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: Database, table: str
) -> None:
    run(capsys, "--table", table, "init")
    sid = "from-stdin-session-id-0001"
    insert(db, table, sha(sid), FAR_FUTURE)
    monkeypatch.setattr(sys, "stdin", io.StringIO(sid + "\n"))
    assert run(capsys, "--table", table, "destroy", "-")[0] == 0
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]


def test_destroy_owner(capsys: pytest.CaptureFixture[str], db: Database, table: str) -> None:
    run(capsys, "--table", table, "init")
    for i in range(3):
        insert(db, table, sha(f"alice-session-{i:04}"), FAR_FUTURE, owner="alice")
    insert(db, table, sha("bob-session-0000"), FAR_FUTURE, owner="bob")
    code, out, _ = run(capsys, "--table", table, "destroy", "--owner", "alice")
    assert code == 0 and out == "ended 3 sessions of owner 'alice'\n"
    assert db.query(f"SELECT session_owner FROM `{table}`") == [("bob",)]
    code, out, _ = run(capsys, "--table", table, "destroy", "--owner", "alice")
    assert code == 0 and out == "ended 0 sessions of owner 'alice'\n"
