"""Every SQL statement the package runs, in one place.

Statements are plain single-row primary-key operations plus batched deletes on the expiry
index, so they behave the same on MariaDB >= 10.5, MySQL 8 and MySQL-compatible clusters.
Times are unix seconds from the provider's clock, always passed as parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

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

#: The packaged schema.sql is the one source of the DDL: create_table(), ``init``,
#: ``init --print-sql``, ``check`` and ``upgrade`` all read it (the repository root holds an
#: identical copy for those who apply it by hand; tests/test_schema.py keeps the two equal).
SCHEMA_FILE = "schema.sql"
#: The table name schema.sql is written for.
SCHEMA_TABLE = "session"
_CREATE_LINE = f"CREATE TABLE IF NOT EXISTS `{SCHEMA_TABLE}` ("


def _read_schema() -> str:
    return resources.files(__name__.rpartition(".")[0]).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def _statement_template(schema: str) -> str:
    """The one statement of schema.sql, without comments or ';', its table name as ``{table}``."""
    statement = "\n".join(line for line in schema.splitlines() if not line.startswith("--")).strip()
    if statement.count(_CREATE_LINE) != 1 or not statement.startswith(_CREATE_LINE) or "{" in statement:
        raise AssertionError(f"{SCHEMA_FILE} must hold one statement starting with {_CREATE_LINE!r}")
    return statement.removesuffix(";").replace(_CREATE_LINE, "CREATE TABLE IF NOT EXISTS `{table}` (", 1)


#: schema.sql as packaged, comments included.
SCHEMA = _read_schema()
_DDL = _statement_template(SCHEMA)


def schema_sql(table: str = SCHEMA_TABLE) -> str:
    """schema.sql as packaged (comments included), written for ``table``: what a DBA applies."""
    create = f"CREATE TABLE IF NOT EXISTS `{check_table_name(table)}` ("
    return SCHEMA.replace(_CREATE_LINE, create, 1)


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
    #: ``select`` for many keys at once: ``{keys}`` is replaced by one ``%s`` per key, and
    #: every value starts with its key (see ``unpack_keyed``).
    select_many: str
    #: The columns ``select`` packs, one by one: only for a row too big to pack.
    select_columns: str
    exist: str
    insert: str
    update: str
    touch: str
    clamp: str
    rename: str
    tombstone: str
    delete: str
    count: str
    gc_batch: str
    columns: str
    of_owner: str
    delete_owner: str
    get_lock: str
    lock_if_live: str
    release_lock: str
    shorten: str


#: Rows within the current lifetime policy: before their deadline (``now``), and created
#: after ``now - absolute_lifetime`` (0: unknown creation time, bound by the deadline alone).
#: Parameters: (now, born_after). Lowering ``absolute_lifetime`` thus takes effect at once.
_IN_POLICY = "session_expiry > %s AND (session_created = 0 OR session_created > %s)"
#: A live session: in policy and not a tombstone. A tombstone (``session_version = 0``,
#: empty data) marks an id that a rotation superseded, for ``rotation_grace`` seconds, so a
#: late response about it can leave the client's newer cookie alone.
LIVE = f"{_IN_POLICY} AND session_version > 0"
TOMBSTONE_VERSION = 0

#: What a read needs, packed by the server into one value: every column of a result set
#: costs PyMySQL a column-definition packet parsed in Python on every statement (about as
#: much as the rest of the statement), so a read returns one column, not five. The value is
#: ``expiry,version,created,owner_bytes,`` + owner + data, where owner_bytes is -1 for a
#: NULL owner: the owner may hold any character (commas, NUL) as its length is given, and
#: the result is a binary string (session_data is a BLOB), so nothing is transcoded.
_PACKED = (
    "CONCAT(session_expiry, ',', session_version, ',', session_created, ',', "
    "IFNULL(LENGTH(session_owner), -1), ',', IFNULL(session_owner, ''), session_data)"
)
#: Length of ``session_key`` (the SHA-256 hex of an id), as select_many's values begin.
KEY_LENGTH = 64
#: A row as ``lookup`` gets it: (data, expiry, version, created, owner).
Unpacked = tuple[bytes, int, int, int, "str | None"]


def unpack(value: bytes) -> Unpacked:
    """The fields of a value of ``Statements.select`` (see ``_PACKED``)."""
    expiry, version, created, size, rest = value.split(b",", 4)
    n = int(size)
    if n < 0:
        return rest, int(expiry), int(version), int(created), None
    return rest[n:], int(expiry), int(version), int(created), rest[:n].decode()


def unpack_keyed(value: bytes) -> tuple[str, Unpacked]:
    """(key, fields) of a value of ``Statements.select_many``: the key comes first."""
    key, expiry, version, created, size, rest = value.split(b",", 5)
    n = int(size)
    owner = rest[:n].decode() if n >= 0 else None
    data = rest[n:] if n > 0 else rest
    return key.decode(), (data, int(expiry), int(version), int(created), owner)


def statements(table: str) -> Statements:
    t = f"`{check_table_name(table)}`"
    return Statements(
        table=table,
        # Tombstones are returned too (version 0): the caller tells "superseded" from "unknown".
        # One packed column (see _PACKED); NULL only if the row is too big to pack (larger
        # than the server's max_allowed_packet), then select_columns reads it.
        select=f"SELECT {_PACKED} FROM {t} WHERE session_key = %s AND {_IN_POLICY}",
        # "key," alone (IFNULL) marks a row too big to pack, as NULL does for select.
        select_many=(
            f"SELECT CONCAT(session_key, ',', IFNULL({_PACKED}, '')) FROM {t} "
            f"WHERE session_key IN ({{keys}}) AND {_IN_POLICY}"
        ),
        select_columns=(
            "SELECT session_data, session_expiry, session_version, session_created, session_owner "
            f"FROM {t} WHERE session_key = %s AND {_IN_POLICY}"
        ),
        exist=f"SELECT 1 FROM {t} WHERE session_key = %s AND {LIVE}",
        insert=(
            f"INSERT INTO {t} (session_key, session_data, session_expiry, session_version, "
            "session_created, session_owner) VALUES (%s, %s, %s, 1, %s, %s)"
        ),
        # Conditioned on the version read and on the row being alive: a write never
        # recreates a row that was deleted, renamed or expired in the meantime.
        update=(
            f"UPDATE {t} SET session_data = %s, session_expiry = %s, session_owner = %s, "
            "session_version = session_version + 1 "
            f"WHERE session_key = %s AND session_version = %s AND {_IN_POLICY}"
        ),
        # Moves only the deadline, never backwards, and leaves the version alone so it
        # cannot make a concurrent data write conflict.
        touch=(
            f"UPDATE {t} SET session_expiry = GREATEST(session_expiry, %s) WHERE session_key = %s AND {LIVE}"
        ),
        # Moves the deadline down to what a lowered max_lifetime allows (never up).
        clamp=f"UPDATE {t} SET session_expiry = LEAST(session_expiry, %s) WHERE session_key = %s AND {LIVE}",
        rename=f"UPDATE {t} SET session_key = %s WHERE session_key = %s AND {LIVE}",
        # Left under the old key by a rotation, in the same transaction as the rename.
        tombstone=(
            f"INSERT INTO {t} (session_key, session_data, session_expiry, session_version, "
            f"session_created, session_owner) VALUES (%s, '', %s, {TOMBSTONE_VERSION}, 0, NULL)"
        ),
        delete=f"DELETE FROM {t} WHERE session_key = %s",
        count=f"SELECT COUNT(*) FROM {t} WHERE {LIVE}",
        gc_batch=f"DELETE FROM {t} WHERE session_expiry <= %s ORDER BY session_expiry LIMIT %s",
        columns=(
            "SELECT COLUMN_NAME, DATA_TYPE, IS_NULLABLE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
        ),
        of_owner=(
            f"SELECT session_key, session_created, session_expiry FROM {t} "
            f"WHERE session_owner = %s AND {LIVE} ORDER BY session_created, session_key"
        ),
        delete_owner=f"DELETE FROM {t} WHERE session_owner = %s",
        get_lock="SELECT GET_LOCK(%s, 0)",
        # Takes the session's named lock only if the session is live: the select list is
        # evaluated for matching rows alone, so an unknown id costs one quick statement and
        # never waits for (or holds) a lock. Parameters: (name, wait, key, now, born_after).
        lock_if_live=f"SELECT GET_LOCK(%s, %s) FROM {t} WHERE session_key = %s AND {LIVE}",
        release_lock="SELECT RELEASE_LOCK(%s)",
        # Applies a (lowered) lifetime policy to every live row, a batch at a time: the
        # deadline becomes at most now + max_lifetime (%s) and created + absolute (%s).
        # Parameters: (idle_cap, absolute, idle_cap, absolute, now, limit).
        shorten=(
            f"UPDATE {t} SET session_expiry = LEAST(session_expiry, %s, "
            "IF(session_created = 0, session_expiry, session_created + %s)) "
            "WHERE session_expiry > LEAST(%s, IF(session_created = 0, session_expiry, session_created + %s)) "
            "AND session_expiry > %s LIMIT %s"
        ),
    )


# -- maintenance statements (CLI) --
#
# What `asgi-mysql-session` runs besides the provider's own statements. The target schema is
# never restated here: column and key definitions are cut out of the DDL above, so `init`,
# `check` and `upgrade` cannot drift from schema.sql.

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: Name of the per-connection TEMPORARY table made from the DDL to compare a table against.
_REFERENCE = "asgi_mysql_session_reference"
#: Temporary index that finds the rows `upgrade` has not converted yet; dropped at the end.
UPGRADE_PENDING_KEY = "session_upgrade_pending"


def _ddl_parts(table: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], str]:
    """(column definitions, key definitions, table options) of the DDL, each on one line."""
    ddl = create_table(table)
    _, _, rest = ddl.partition("(\n")
    body, _, options = rest.rpartition("\n) ")
    items: list[list[str]] = []
    for line in body.splitlines():
        if line.startswith("    ") and items:  # continuation of the item above (its COMMENT)
            items[-1].append(line.strip())
        else:
            items.append([line.strip()])
    columns: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []
    for item in items:
        text = " ".join(item).rstrip(",")
        if text.startswith("`"):
            columns.append((text.split("`")[1], text))
        elif text.startswith("PRIMARY KEY"):
            keys.append(("PRIMARY", text))
        elif text.startswith("KEY `"):
            keys.append((text.split("`")[1], text))
        else:  # pragma: no cover - guards edits of _DDL
            raise AssertionError(f"unexpected line in the DDL: {text!r}")
    assert [name for name, _ in columns] == list(REQUIRED_COLUMNS), "DDL and REQUIRED_COLUMNS differ"
    return tuple(columns), tuple(keys), " ".join(options.split())


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise SessionConfigError(f"refusing to use {name!r} as an SQL identifier")
    return f"`{name}`"


@dataclass(frozen=True)
class Maintenance:
    """The statements of the operator CLI for one table (init, check, upgrade, stats)."""

    table: str
    create: str
    #: ENGINE, TABLE_COLLATION, TABLE_ROWS (an estimate) of the table; no row if it is missing.
    table_info: str
    #: COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE, COLLATION_NAME.
    column_info: str
    #: INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, ordered by index and position.
    index_info: str
    show_columns: str
    show_index: str
    create_reference: str
    drop_reference: str
    show_reference_columns: str
    show_reference_index: str
    count_rows: str
    #: Bounds the wait for the metadata lock of an ALTER, so a busy table fails the
    #: upgrade quickly instead of queueing every session query behind it.
    set_lock_wait: str
    #: Rows that `upgrade` still has to convert (session_version IS NULL).
    count_pending: str
    #: Converts up to %s rows of the Go provider: SHA-256 of the raw id as key, the
    #: last-write time becomes the creation time and, plus max lifetime (%s first), the
    #: deadline. The marker ``session_version`` goes from NULL to 1 in the same row write,
    #: so a key is never hashed twice, however often an interrupted upgrade is re-run.
    convert_rows_drop_data: str
    convert_rows_keep_data: str
    live_stats: str
    expired_stats: str
    size_percentiles: str
    column_definitions: tuple[tuple[str, str], ...]
    key_definitions: tuple[tuple[str, str], ...]
    table_options: str

    @property
    def engine(self) -> str:
        match = re.search(r"ENGINE=(\w+)", self.table_options)
        assert match is not None
        return match.group(1)

    @property
    def collation(self) -> str:
        match = re.search(r"COLLATE=(\w+)", self.table_options)
        assert match is not None
        return match.group(1)

    def prepare_legacy(self, missing: frozenset[str], key_length: int) -> str:
        """First ALTER of a Go provider table: InnoDB, room for the hash, the new columns.

        ``session_version`` is added NULL-able with no default: NULL marks the rows not yet
        converted (and any row the Go provider writes meanwhile).
        """
        t = _identifier(self.table)
        length = max(64, key_length)
        clauses = [
            f"MODIFY COLUMN `session_key` CHAR({length}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
            "ADD COLUMN `session_version` INT UNSIGNED NULL DEFAULT NULL",
        ]
        clauses += [
            f"ADD COLUMN {definition}"
            for name, definition in self.column_definitions
            if name in missing and name != "session_version"
        ]
        clauses.append(f"ADD KEY `{UPGRADE_PENDING_KEY}` (`session_version`)")
        clauses.append(f"ENGINE={self.engine}")
        return f"ALTER TABLE {t} " + ", ".join(clauses)

    def copy_names(self) -> tuple[str, str]:
        """(the new table a copying upgrade fills, the name the old table is kept under)."""
        stem = self.table[:50]
        return f"{stem}_upgrading", f"{stem}_go_backup"

    def copy_legacy(self, new: str, keep_data: bool) -> str:
        """Fills ``new`` (made from the DDL) with the Go provider's rows converted, in one
        statement; ``%s`` is the max lifetime. The same conversion as the in-place upgrade."""
        data = "COALESCE(session_data, '')" if keep_data else "''"
        return (
            f"INSERT INTO {_identifier(new)} (session_key, session_data, session_expiry, session_version, "
            f"session_created, session_owner) SELECT SHA2(session_key, 256), {data}, session_expiry + %s, "
            f"1, session_expiry, NULL FROM {_identifier(self.table)}"
        )

    def swap(self, new: str, backup: str) -> str:
        """One atomic RENAME: the old table becomes ``backup``, ``new`` takes its name."""
        t = _identifier(self.table)
        return f"RENAME TABLE {t} TO {_identifier(backup)}, {_identifier(new)} TO {t}"

    def conform(self, present: frozenset[str], drop_keys: tuple[str, ...], add_keys: tuple[str, ...]) -> str:
        """One ALTER that gives every column, key and table option its schema.sql definition."""
        t = _identifier(self.table)
        clauses = [
            f"{'MODIFY' if name in present else 'ADD'} COLUMN {definition}"
            for name, definition in self.column_definitions
        ]
        clauses += ["DROP PRIMARY KEY" if k == "PRIMARY" else f"DROP KEY {_identifier(k)}" for k in drop_keys]
        clauses += [f"ADD {definition}" for name, definition in self.key_definitions if name in add_keys]
        clauses.append(self.table_options)  # space-separated table options are one ALTER clause
        return f"ALTER TABLE {t} " + ", ".join(clauses)


def maintenance(table: str) -> Maintenance:
    t = f"`{check_table_name(table)}`"
    ref = f"`{_REFERENCE}`"
    columns, keys, options = _ddl_parts(table)
    reference_ddl = create_table(_REFERENCE).replace(
        "CREATE TABLE IF NOT EXISTS", "CREATE TEMPORARY TABLE", 1
    )
    convert = (
        f"UPDATE {t} SET session_created = session_expiry, session_expiry = session_expiry + %s, "
        "session_key = SHA2(session_key, 256), session_data = {data}, session_version = 1 "
        "WHERE session_version IS NULL LIMIT %s"
    )
    live = f"FROM {t} WHERE session_expiry > %s AND session_version > 0"
    return Maintenance(
        table=table,
        create=create_table(table),
        table_info=(
            "SELECT ENGINE, TABLE_COLLATION, TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
        ),
        column_info=(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE, COLLATION_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "ORDER BY ORDINAL_POSITION"
        ),
        index_info=(
            "SELECT INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        ),
        show_columns=f"SHOW FULL COLUMNS FROM {t}",
        show_index=f"SHOW INDEX FROM {t}",
        create_reference=reference_ddl,
        drop_reference=f"DROP TEMPORARY TABLE IF EXISTS {ref}",
        show_reference_columns=f"SHOW FULL COLUMNS FROM {ref}",
        show_reference_index=f"SHOW INDEX FROM {ref}",
        count_rows=f"SELECT COUNT(*) FROM {t}",
        set_lock_wait="SET SESSION lock_wait_timeout = %s",
        count_pending=f"SELECT COUNT(*) FROM {t} WHERE session_version IS NULL",
        convert_rows_drop_data=convert.format(data="''"),
        convert_rows_keep_data=convert.format(data="COALESCE(session_data, '')"),
        live_stats=(
            "SELECT COUNT(*), COUNT(session_owner), COUNT(DISTINCT session_owner), "
            f"MIN(session_expiry), MAX(session_expiry) {live}"
        ),
        expired_stats=f"SELECT COUNT(*), MIN(session_expiry) FROM {t} WHERE session_expiry <= %s",
        # Nearest-rank percentiles of the live rows' data sizes, ranked on the server in one
        # statement (window functions: MariaDB >= 10.2, MySQL 8), nothing fetched but 4 numbers.
        size_percentiles=(
            "SELECT MAX(CASE WHEN rn = CEIL(0.50 * total) THEN n END), "
            "MAX(CASE WHEN rn = CEIL(0.90 * total) THEN n END), "
            "MAX(CASE WHEN rn = CEIL(0.99 * total) THEN n END), MAX(n) "
            "FROM (SELECT LENGTH(session_data) AS n, "
            "ROW_NUMBER() OVER (ORDER BY LENGTH(session_data)) AS rn, "
            f"COUNT(*) OVER () AS total {live}) AS ranked"
        ),
        column_definitions=columns,
        key_definitions=keys,
        table_options=options,
    )


# -- leases (Galera) --
#
# On a Galera cluster GET_LOCK is local to one node, so the sweep and serialized requests
# coordinate through rows of a small InnoDB table instead: a row per held lease, claimed by
# conditional writes that Galera certifies cluster-wide (the loser of a race gets error 1213
# and, on retry, sees the winner's row). Times are unix milliseconds from the host clocks.

#: Longest table name whose lease table name is ``{table}_lease``; longer names are cut.
_LEASE_SUFFIX = "_lease"


def lease_table_name(table: str) -> str:
    """The lease table that goes with session table ``table`` (at most 64 characters)."""
    return f"{check_table_name(table)[: 64 - len(_LEASE_SUFFIX)]}{_LEASE_SUFFIX}"


_LEASE_DDL = """CREATE TABLE IF NOT EXISTS `{table}` (
  `lease_name` VARCHAR(191) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
    COMMENT 'what is held: sweep, or session:<key hash> for a serialized request',
  `lease_holder` CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
    COMMENT 'random token of the one claim that holds it',
  `lease_expires` BIGINT NOT NULL
    COMMENT 'unix milliseconds; past it the lease has lapsed and may be taken over',
  PRIMARY KEY (`lease_name`)
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin
  COMMENT='asgi_mysql_session leases (Galera clusters, where GET_LOCK is node-local)'"""


def create_lease_table(table: str) -> str:
    """The DDL of the lease table of session table ``table``."""
    return _LEASE_DDL.format(table=lease_table_name(table))


def lease_schema_sql(table: str = SCHEMA_TABLE) -> str:
    """The lease table's DDL as a DBA applies it, with a comment saying when it is needed."""
    return (
        "-- asgi_mysql_session: the lease table, needed on Galera clusters only (named locks\n"
        "-- are node-local there): the background sweep and serialized requests hold rows here.\n"
        f"{create_lease_table(table)};\n"
    )


@dataclass(frozen=True)
class LeaseStatements:
    """The statements on the lease table of one session table."""

    table: str
    #: Claims a free lease: 1 row if it was free (no row), 0 if a row exists.
    claim_free: str
    #: Takes over a lapsed lease: 1 matched row if it had lapsed. (holder, expires, name, now)
    claim_lapsed: str
    #: Extends a lease its holder still has: 1 matched row if so. (expires, name, holder)
    renew: str
    #: Gives a lease back, only if this holder still has it. (name, holder)
    release: str


def lease_statements(table: str) -> LeaseStatements:
    name = lease_table_name(table)
    t = f"`{name}`"
    return LeaseStatements(
        table=name,
        claim_free=f"INSERT IGNORE INTO {t} (lease_name, lease_holder, lease_expires) VALUES (%s, %s, %s)",
        claim_lapsed=(
            f"UPDATE {t} SET lease_holder = %s, lease_expires = %s "
            "WHERE lease_name = %s AND lease_expires < %s"
        ),
        renew=f"UPDATE {t} SET lease_expires = %s WHERE lease_name = %s AND lease_holder = %s",
        release=f"DELETE FROM {t} WHERE lease_name = %s AND lease_holder = %s",
    )
