"""schema.sql is the provider's own DDL, and the table it makes is what the provider needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Database

from asgi_mysql_session import InvalidSessionId, MySQLSessionProvider, ddl

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ROOT / "asgi_mysql_session" / "schema.sql"
#: A copy at the repository root, for those who apply the DDL by hand from a checkout.
SCHEMA = ROOT / "schema.sql"


def test_the_root_schema_sql_is_a_copy_of_the_packaged_one() -> None:
    assert SCHEMA.read_bytes() == PACKAGED.read_bytes(), "cp asgi_mysql_session/schema.sql schema.sql"


def test_schema_sql_is_the_ddl_the_provider_creates() -> None:
    statement = "\n".join(
        line for line in SCHEMA.read_text().splitlines() if not line.startswith("--")
    ).strip()
    assert statement == ddl.create_table("session") + ";"


def test_the_ddl_is_read_from_the_packaged_file() -> None:
    assert PACKAGED.read_text() == ddl.SCHEMA
    assert ddl.schema_sql() == ddl.SCHEMA
    other = ddl.schema_sql("other_table")
    assert other == ddl.SCHEMA.replace(
        "CREATE TABLE IF NOT EXISTS `session` (", "CREATE TABLE IF NOT EXISTS `other_table` ("
    )
    assert ddl.create_table("other_table") + ";" in other


def test_every_column_has_a_comment(db: Database, provider: MySQLSessionProvider, table: str) -> None:
    rows = db.query(
        "SELECT COLUMN_NAME, COLUMN_COMMENT FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        (table,),
    )
    assert {name for name, _ in rows} == set(ddl.REQUIRED_COLUMNS)
    assert all(comment for _, comment in rows)


async def test_ids_differing_in_case_or_trailing_space_never_match(
    db: Database, provider: MySQLSessionProvider, table: str
) -> None:
    # The column is ascii_bin (no case folding); PAD SPACE cannot bite because every value
    # compared is a 64-character hex digest, never the client's string.
    assert db.query(f"SHOW FULL COLUMNS FROM `{table}` LIKE 'session_key'")[0][2] == "ascii_bin"
    sid = "A" * 30 + "b" * 13
    store = await provider.read(sid)
    store["a"] = 1
    await store.release()
    for variant in (sid.lower(), sid.upper()):
        assert not await provider.exist(variant)
    for variant in (sid + " ", sid + "\t", sid + "\x00"):
        with pytest.raises(InvalidSessionId):
            await provider.exist(variant)
    assert await provider.exist(sid)


async def test_a_row_written_without_a_creation_time_keeps_working(
    db: Database, provider: MySQLSessionProvider, table: str
) -> None:
    # e.g. written by the Go provider while `asgi-mysql-session upgrade` ran
    sid = provider.new_session_id()
    store = await provider.read(sid)
    db.query(
        f"INSERT INTO `{table}` (session_key, session_data, session_expiry) VALUES (%s, %s, %s)",
        (store.key_hash, b"\x81\xa1a\x01", provider.now() + 60),
    )
    store = await provider.read(sid)
    assert dict(store) == {"a": 1} and store.created == 0
    store["a"] = 2
    await store.release()
    assert store.expiry == provider.now() + provider.max_lifetime
    assert dict(await provider.read(sid)) == {"a": 2}
