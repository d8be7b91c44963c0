"""Every SQL statement the package runs, in one place.

Statements are plain single-row primary-key operations plus batched deletes on the expiry
index, so they behave the same on MariaDB >= 10.5, MySQL 8 and MySQL-compatible clusters.
Times are unix seconds from the provider's clock, always passed as parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SessionConfigError

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

#: Largest value a MEDIUMBLOB holds; ``max_size`` may not exceed it.
DATA_COLUMN_BYTES = 2**24 - 1

#: Columns the provider needs, with the type each must have (information_schema DATA_TYPE).
REQUIRED_COLUMNS = {
    "session_key": "char",
    "session_data": "mediumblob",
    "session_expiry": "int",
    "session_version": "int",
    "session_created": "int",
    "session_owner": "varchar",
}

_DDL = """\
CREATE TABLE IF NOT EXISTS `{table}` (
  `session_key` CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
    COMMENT 'SHA-256 hex of the session id; the id itself is never stored',
  `session_data` MEDIUMBLOB NOT NULL
    COMMENT 'msgpack map of the session; size capped by the provider''s max_size',
  `session_expiry` INT UNSIGNED NOT NULL
    COMMENT 'absolute deadline in unix seconds; rows at or past it are dead',
  `session_version` INT UNSIGNED NOT NULL DEFAULT 1
    COMMENT 'bumped on every data write; updates are conditioned on it',
  `session_created` INT UNSIGNED NOT NULL DEFAULT 0
    COMMENT 'creation time in unix seconds; caps the deadline at the absolute lifetime',
  `session_owner` VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL DEFAULT NULL
    COMMENT 'optional owner (e.g. user id) so all of its sessions can be listed or ended',
  PRIMARY KEY (`session_key`),
  KEY `session_expiry` (`session_expiry`),
  KEY `session_owner` (`session_owner`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='asgi_mysql_session sessions'"""


def check_table_name(table: str) -> str:
    """Table names are interpolated into SQL, so only plain identifiers are allowed."""
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise SessionConfigError(
            f"invalid table name {table!r}: use letters, digits and underscores (max 64)"
        )
    return table


def create_table(table: str) -> str:
    """The DDL that schema.sql holds for the default table name."""
    return _DDL.format(table=check_table_name(table))


@dataclass(frozen=True)
class Statements:
    """The statements for one table, formatted once."""

    table: str
    select: str
    exist: str
    insert: str
    update: str
    touch: str
    rename: str
    delete: str
    count: str
    gc_batch: str
    columns: str
    of_owner: str
    delete_owner: str
    get_lock: str
    release_lock: str


def statements(table: str) -> Statements:
    t = f"`{check_table_name(table)}`"
    return Statements(
        table=table,
        select=(
            "SELECT session_data, session_expiry, session_version, session_created, session_owner "
            f"FROM {t} WHERE session_key = %s AND session_expiry > %s"
        ),
        exist=f"SELECT 1 FROM {t} WHERE session_key = %s AND session_expiry > %s",
        insert=(
            f"INSERT INTO {t} (session_key, session_data, session_expiry, session_version, "
            "session_created, session_owner) VALUES (%s, %s, %s, 1, %s, %s)"
        ),
        # Conditioned on the version read and on the row being alive: a write never
        # recreates a row that was deleted, renamed or expired in the meantime.
        update=(
            f"UPDATE {t} SET session_data = %s, session_expiry = %s, session_owner = %s, "
            "session_version = session_version + 1 "
            "WHERE session_key = %s AND session_version = %s AND session_expiry > %s"
        ),
        # Moves only the deadline, never backwards, and leaves the version alone so it
        # cannot make a concurrent data write conflict.
        touch=(
            f"UPDATE {t} SET session_expiry = GREATEST(session_expiry, %s) "
            "WHERE session_key = %s AND session_expiry > %s"
        ),
        rename=f"UPDATE {t} SET session_key = %s WHERE session_key = %s AND session_expiry > %s",
        delete=f"DELETE FROM {t} WHERE session_key = %s",
        count=f"SELECT COUNT(*) FROM {t} WHERE session_expiry > %s",
        gc_batch=f"DELETE FROM {t} WHERE session_expiry <= %s ORDER BY session_expiry LIMIT %s",
        columns=(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
        ),
        of_owner=(
            f"SELECT session_key, session_created, session_expiry FROM {t} "
            "WHERE session_owner = %s AND session_expiry > %s ORDER BY session_created, session_key"
        ),
        delete_owner=f"DELETE FROM {t} WHERE session_owner = %s",
        get_lock="SELECT GET_LOCK(%s, 0)",
        release_lock="SELECT RELEASE_LOCK(%s)",
    )
