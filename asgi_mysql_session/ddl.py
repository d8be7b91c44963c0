"""The session table's DDL (schema.sql), and how an existing table measures up to it.

``schema.sql`` (packaged) is the one source of the DDL: ``create_table()``, ``init``,
``init --print-sql``, ``check`` and ``upgrade`` all read it (the repository root holds an
identical copy for those who apply it by hand; tests/test_schema.py keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from . import sql
from .coordination import Cluster
from .link import Link

# -- the DDL ---------------------------------------------------------------------------------

#: Columns the provider needs, with the type each must have (information_schema DATA_TYPE).
REQUIRED_COLUMNS = {
    "session_key": "char",
    "session_data": "mediumblob",
    "session_expiry": "int",
    "session_version": "int",
    "session_created": "int",
    "session_owner": "varchar",
}
SCHEMA_FILE = "schema.sql"
#: The table name schema.sql is written for.
SCHEMA_TABLE = "session"
_CREATE_LINE = f"CREATE TABLE IF NOT EXISTS `{SCHEMA_TABLE}` ("
#: schema.sql as packaged, comments included.
SCHEMA = resources.files(__name__.rpartition(".")[0]).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def _statement_template(schema: str) -> str:
    """The one statement of schema.sql, without comments or ';', its table name as ``{table}``."""
    statement = "\n".join(line for line in schema.splitlines() if not line.startswith("--")).strip()
    if statement.count(_CREATE_LINE) != 1 or not statement.startswith(_CREATE_LINE) or "{" in statement:
        raise AssertionError(f"{SCHEMA_FILE} must hold one statement starting with {_CREATE_LINE!r}")
    return statement.removesuffix(";").replace(_CREATE_LINE, "CREATE TABLE IF NOT EXISTS `{table}` (", 1)


_DDL = _statement_template(SCHEMA)

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


def create_table(table: str) -> str:
    """The DDL statement of schema.sql for ``table`` (no comments, no ';')."""
    return _DDL.format(table=sql.check_table_name(table))


def create_lease_table(table: str) -> str:
    """The DDL of the lease table of session table ``table`` (Galera; see coordination.py)."""
    return _LEASE_DDL.format(table=sql.lease_table_name(table))


def schema_sql(table: str = SCHEMA_TABLE, *, galera: bool = False) -> str:
    """schema.sql as packaged (comments included), written for ``table``: what a DBA applies.

    ``galera`` adds the lease table a Galera cluster needs, with a comment saying so.
    """
    text = SCHEMA.replace(_CREATE_LINE, f"CREATE TABLE IF NOT EXISTS `{sql.check_table_name(table)}` (", 1)
    if galera:
        text += (
            "\n-- asgi_mysql_session: the lease table, needed on Galera clusters only (named locks\n"
            "-- are node-local there): the background sweep and serialized requests hold rows here.\n"
            f"{create_lease_table(table)};\n"
        )
    return text


# -- what a table looks like -------------------------------------------------------------------

_TABLE_INFO = (
    "SELECT ENGINE, TABLE_COLLATION, TABLE_ROWS FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
)
_COLUMN_INFO = (
    "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE, COLLATION_NAME "
    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
    "ORDER BY ORDINAL_POSITION"
)
_INDEX_INFO = (
    "SELECT INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX"
)
#: Temporary index that finds the rows an upgrade has not converted yet; dropped at its end.
UPGRADE_PENDING_KEY = "session_upgrade_pending"


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


async def table_exists(link: Link, table: str) -> bool:
    _, tables = await link.execute(_TABLE_INFO, (table,))
    return bool(tables)


async def inspect_table(link: Link, table: str) -> TableState | None:
    """The table as information_schema has it, or None if there is no such table."""
    _, tables = await link.execute(_TABLE_INFO, (table,))
    if not tables:
        return None
    engine, collation, rows_estimate = tables[0]
    _, columns = await link.execute(_COLUMN_INFO, (table,))
    _, index_rows = await link.execute(_INDEX_INFO, (table,))
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


def _diagnose(state: TableState) -> tuple[list[str], list[str]]:
    """(problems that stop the provider, cautions that do not)."""
    problems: list[str] = []
    cautions: list[str] = []
    for column, data_type in REQUIRED_COLUMNS.items():
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
    if UPGRADE_PENDING_KEY in state.indexes:
        cautions.append(f"the index {UPGRADE_PENDING_KEY} of an unfinished upgrade is still there")
    return problems, cautions


@dataclass(frozen=True)
class SchemaReport:
    """What ``SessionSchema.check()`` found: problems stop the provider, warnings do not."""

    table: str
    database: str
    engine: str | None
    #: information_schema's estimate of the rows.
    rows_estimate: int
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    #: No ``session_version`` column: a table of the Go provider, which ``upgrade()`` converts.
    legacy: bool
    #: The server: a Galera cluster also needs the lease table (``SessionSchema.lease_table``).
    cluster: Cluster

    @property
    def ok(self) -> bool:
        """The provider can use the table."""
        return not self.problems


def report_of(state: TableState, table: str, database: str, cluster: Cluster) -> SchemaReport:
    problems, cautions = _diagnose(state)
    return SchemaReport(
        table=table,
        database=database,
        engine=state.engine,
        rows_estimate=state.rows_estimate,
        problems=tuple(problems),
        warnings=tuple(cautions),
        legacy="session_version" not in state.columns,
        cluster=cluster,
    )


# -- comparing a table with the DDL ------------------------------------------------------------

#: Name of the per-connection TEMPORARY table made from the DDL to compare a table against.
_REFERENCE = "asgi_mysql_session_reference"


def ddl_parts(table: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], str]:
    """(column definitions, key definitions, table options) of the DDL, each on one line."""
    _, _, rest = create_table(table).partition("(\n")
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
        else:  # pragma: no cover - guards edits of schema.sql
            raise AssertionError(f"unexpected line in the DDL: {text!r}")
    assert [name for name, _ in columns] == list(REQUIRED_COLUMNS), "DDL and REQUIRED_COLUMNS differ"
    return tuple(columns), tuple(keys), " ".join(options.split())


@dataclass(frozen=True)
class Shape:
    """A table as SHOW describes it, to compare with the DDL's own temporary copy."""

    columns: dict[str, tuple[Any, ...]]
    indexes: dict[str, tuple[Any, ...]]


async def _shape(link: Link, table: str) -> Shape:
    _, columns = await link.execute(f"SHOW FULL COLUMNS FROM `{table}`")
    _, index_rows = await link.execute(f"SHOW INDEX FROM `{table}`")
    indexes: dict[str, list[Any]] = {}
    for row in index_rows:  # Table, Non_unique, Key_name, Seq_in_index, Column_name, _, _, Sub_part
        indexes.setdefault(str(row[2]), []).append((int(row[1]), str(row[4]).lower(), row[7]))
    return Shape(
        # Field, Type, Collation, Null, Key, Default, Extra, Privileges, Comment
        columns={str(r[0]).lower(): (r[1], r[2], r[3], r[5], r[6], r[8]) for r in columns},
        indexes={name: tuple(parts) for name, parts in indexes.items()},
    )


async def table_shape(link: Link, table: str) -> Shape:
    """The table as SHOW describes it."""
    return await _shape(link, sql.check_table_name(table))


async def reference_shape(link: Link) -> Shape:
    """The shape the DDL gives on this server, from a TEMPORARY table only this connection sees."""
    drop = f"DROP TEMPORARY TABLE IF EXISTS `{_REFERENCE}`"
    await link.execute(drop)
    await link.execute(
        create_table(_REFERENCE).replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMPORARY TABLE", 1)
    )
    try:
        return await _shape(link, _REFERENCE)
    finally:
        await link.execute(drop)
