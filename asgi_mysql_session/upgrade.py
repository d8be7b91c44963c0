"""Upgrading a session table in place: the Go provider's table to this schema, any table to schema.sql.

``SessionSchema.upgrade()`` runs :func:`upgrade_table` on one connection. The target is never
restated here: column and key definitions are cut out of schema.sql's DDL (``ddl.ddl_parts``),
and a TEMPORARY table made from it tells what the DDL gives on this very server, so ``init``,
``check`` and ``upgrade`` cannot drift from schema.sql.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .coordination import Cluster
from .ddl import (
    REQUIRED_COLUMNS,
    UPGRADE_PENDING_KEY,
    SchemaReport,
    Shape,
    TableState,
    create_table,
    ddl_parts,
    inspect_table,
    reference_shape,
    report_of,
    table_exists,
    table_shape,
)
from .errors import SessionBackendError, SessionConfigError, SessionSchemaError
from .link import Link

#: How long an ALTER of an upgrade waits for the table's metadata lock before giving up.
LOCK_WAIT_SECONDS = 10
#: The columns a table made by the Go provider has (and an upgrade needs).
LEGACY_COLUMNS = ("session_key", "session_data", "session_expiry")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


# -- what an upgrade reports -------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradeStep:
    """A change an upgrade made, reported as soon as it is made: ``message`` is one line."""

    message: str


@dataclass(frozen=True)
class RowsConverted:
    """A batch of the Go provider's rows converted in place (for a progress display)."""

    #: Rows in this batch, rows converted so far, and rows to convert as counted at the start
    #: (rows the Go application writes meanwhile come on top).
    batch: int
    done: int
    total: int


#: What ``upgrade()`` tells its ``progress`` callback: what it found and is about to do (a
#: line), each change it made (``UpgradeStep``), and how far a batched conversion is.
UpgradeProgress = Callable[[str | UpgradeStep | RowsConverted], None]


@dataclass(frozen=True)
class UpgradeReport:
    """What ``SessionSchema.upgrade()`` did."""

    #: False: the table was already up to date, nothing was done.
    changed: bool
    #: Rows of the Go provider converted (in place, or copied into a new table).
    converted: int
    #: A copying upgrade (Galera, non-InnoDB Go table) kept the old table under this name.
    backup: str | None
    #: The table as it is now.
    check: SchemaReport


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise SessionConfigError(f"refusing to use {name!r} as an SQL identifier")
    return f"`{name}`"


@dataclass(frozen=True)
class UpgradeStatements:
    """The statements of an upgrade of one table."""

    table: str
    count_rows: str
    #: Bounds the wait for the metadata lock of an ALTER, so a busy table fails the
    #: upgrade quickly instead of queueing every session query behind it; then back to the
    #: server's default once done (the connection may be the provider's pool's).
    set_lock_wait: str
    reset_lock_wait: str
    #: Rows still to convert (session_version IS NULL).
    count_pending: str
    #: Converts up to %s rows of the Go provider: SHA-256 of the raw id as key, the
    #: last-write time becomes the creation time and, plus max lifetime (%s first), the
    #: deadline. The marker ``session_version`` goes from NULL to 1 in the same row write,
    #: so a key is never hashed twice, however often an interrupted upgrade is re-run.
    convert_rows_drop_data: str
    convert_rows_keep_data: str
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
        clauses = [
            f"MODIFY COLUMN `session_key` CHAR({max(64, key_length)}) CHARACTER SET utf8mb4 "
            "COLLATE utf8mb4_bin NOT NULL",
            "ADD COLUMN `session_version` INT UNSIGNED NULL DEFAULT NULL",
        ]
        clauses += [
            f"ADD COLUMN {definition}"
            for name, definition in self.column_definitions
            if name in missing and name != "session_version"
        ]
        clauses.append(f"ADD KEY `{UPGRADE_PENDING_KEY}` (`session_version`)")
        clauses.append(f"ENGINE={self.engine}")
        return f"ALTER TABLE {_identifier(self.table)} " + ", ".join(clauses)

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
        clauses = [
            f"{'MODIFY' if name in present else 'ADD'} COLUMN {definition}"
            for name, definition in self.column_definitions
        ]
        clauses += ["DROP PRIMARY KEY" if k == "PRIMARY" else f"DROP KEY {_identifier(k)}" for k in drop_keys]
        clauses += [f"ADD {definition}" for name, definition in self.key_definitions if name in add_keys]
        clauses.append(self.table_options)  # space-separated table options are one ALTER clause
        return f"ALTER TABLE {_identifier(self.table)} " + ", ".join(clauses)


def upgrade_statements(table: str) -> UpgradeStatements:
    t = _identifier(table)
    columns, keys, options = ddl_parts(table)
    convert = (
        f"UPDATE {t} SET session_created = session_expiry, session_expiry = session_expiry + %s, "
        "session_key = SHA2(session_key, 256), session_data = {data}, session_version = 1 "
        "WHERE session_version IS NULL LIMIT %s"
    )
    return UpgradeStatements(
        table=table,
        count_rows=f"SELECT COUNT(*) FROM {t}",
        set_lock_wait="SET SESSION lock_wait_timeout = %s",
        reset_lock_wait="SET SESSION lock_wait_timeout = DEFAULT",
        count_pending=f"SELECT COUNT(*) FROM {t} WHERE session_version IS NULL",
        convert_rows_drop_data=convert.format(data="''"),
        convert_rows_keep_data=convert.format(data="COALESCE(session_data, '')"),
        column_definitions=columns,
        key_definitions=keys,
        table_options=options,
    )


# -- the upgrade -------------------------------------------------------------------------------


def _conform_plan(
    m: UpgradeStatements, state: TableState, current: Shape, reference: Shape
) -> tuple[str, list[str]] | None:
    """The ALTER that brings the table to the DDL, and why; None if nothing differs."""
    reasons: list[str] = []
    for name, _ in m.column_definitions:
        if name not in current.columns:
            reasons.append(f"added {name}")
        elif current.columns[name] != reference.columns[name]:
            reasons.append(f"redefined {name}")
    drop: list[str] = []
    add: list[str] = []
    for name, _ in m.key_definitions:
        have = current.indexes.get(name)
        if have != reference.indexes[name]:
            if have is not None:
                drop.append(name)
            add.append(name)
            reasons.append(f"{'rebuilt' if have is not None else 'added'} index {name}")
    if UPGRADE_PENDING_KEY in current.indexes:
        drop.append(UPGRADE_PENDING_KEY)
        reasons.append(f"dropped index {UPGRADE_PENDING_KEY}")
    if (state.engine or "").lower() != m.engine.lower():
        reasons.append(f"engine {state.engine} -> {m.engine}")
    if (state.collation or "").lower() != m.collation.lower():
        reasons.append(f"default collation {state.collation} -> {m.collation}")
    if not reasons:
        return None
    return m.conform(frozenset(current.columns), tuple(drop), tuple(add)), reasons


async def _step(link: Link, doing: str, statement: str, args: tuple[Any, ...] = ()) -> int:
    try:
        count, _ = await link.execute(statement, args)
    except SessionBackendError as exc:
        raise SessionBackendError(
            f"upgrade stopped while {doing}: {exc} (nothing was lost; run upgrade again to resume)"
        ) from exc
    return count


async def upgrade_table(
    link: Link,
    state: TableState,
    *,
    table: str,
    database: str,
    cluster: Cluster,
    max_lifetime: int,
    drop_data: bool,
    batch_size: int,
    progress: UpgradeProgress,
) -> UpgradeReport:
    """Bring the existing table ``state`` describes to schema.sql, without losing rows.

    A table without ``session_version`` is the Go provider's (``session_key`` a raw id,
    ``session_expiry`` the last write): keys become the SHA-256 of the ids, the deadline the
    last write + ``max_lifetime``, and the table InnoDB. Safe to re-run: an interrupted upgrade
    resumes and never hashes a key twice; an up-to-date table is left alone.
    """
    m = upgrade_statements(table)
    await link.execute(m.set_lock_wait, (LOCK_WAIT_SECONDS,))
    report = await _upgrade(link, m, state, database, cluster, max_lifetime, drop_data, batch_size, progress)
    # Not after a failure, when the connection may be mid-statement: one that is kept keeps the
    # short wait, which bounds waits for metadata locks only.
    await link.execute(m.reset_lock_wait)
    return report


async def _upgrade(
    link: Link,
    m: UpgradeStatements,
    state: TableState,
    database: str,
    cluster: Cluster,
    max_lifetime: int,
    drop_data: bool,
    batch_size: int,
    progress: UpgradeProgress,
) -> UpgradeReport:
    table = m.table
    converted = 0
    changed = False
    # No session_version: the Go provider's table, whose keys are raw ids. Adding the
    # column NULL-able marks every row as still to convert; conversion sets it to 1.
    if "session_version" not in state.columns:
        lacking = [column for column in LEGACY_COLUMNS if column not in state.columns]
        if lacking:
            raise SessionSchemaError(
                f"table `{table}` is not a session table (it has no {', '.join(lacking)}); "
                "nothing was changed"
            )
        _, rows = await link.execute(m.count_rows)
        engine = state.engine or "unknown engine"
        if engine.lower() != "innodb" and cluster is Cluster.GALERA:
            # Galera replicates InnoDB rows only: converting a MyISAM table in place would
            # apply row changes that the other nodes cannot find (error 1032), and the
            # cluster votes nodes out. Copy into a new InnoDB table and swap it in instead.
            progress(
                f"table `{table}` has the Go provider's schema ({engine}, {rows[0][0]} rows on this "
                "node) on a Galera cluster: copying it into a new InnoDB table"
            )
            converted, backup = await _copy_legacy(link, m, max_lifetime, drop_data, progress)
            return UpgradeReport(True, converted, backup, await _report(link, table, database, cluster))
        progress(
            f"table `{table}` has the Go provider's schema ({state.engine}, {rows[0][0]} rows): "
            "upgrading it in place"
        )
        key_length = state.columns["session_key"].length or 64
        missing = frozenset(REQUIRED_COLUMNS) - frozenset(state.columns)
        await _step(link, "adding columns", m.prepare_legacy(missing, key_length))
        progress(
            UpgradeStep(f"added {', '.join(c for c in REQUIRED_COLUMNS if c in missing)}; engine InnoDB")
        )
        changed = True
        state = await _inspected(link, table)
    version = state.columns.get("session_version")
    if version is not None and version.nullable:
        converted = await _convert_rows(link, m, max_lifetime, drop_data, batch_size, progress)
        data = "emptied their unreadable data" if drop_data else "kept their data"
        progress(
            UpgradeStep(
                f"converted {converted} rows: key = SHA-256 of the stored id, "
                f"deadline = last write + {max_lifetime}s; {data}"
            )
        )
        changed = True
    current = await table_shape(link, table)
    plan = _conform_plan(m, state, current, await reference_shape(link))
    if plan is not None:
        statement, reasons = plan
        await _step(link, "applying the schema.sql definitions", statement)
        progress(UpgradeStep(f"applied the schema.sql definitions: {', '.join(reasons)}"))
        changed = True
        state = await _inspected(link, table)
    return UpgradeReport(changed, converted, None, report_of(state, table, database, cluster))


async def _inspected(link: Link, table: str) -> TableState:
    state = await inspect_table(link, table)
    assert state is not None
    return state


async def _report(link: Link, table: str, database: str, cluster: Cluster) -> SchemaReport:
    return report_of(await _inspected(link, table), table, database, cluster)


async def _copy_legacy(
    link: Link, m: UpgradeStatements, max_lifetime: int, drop_data: bool, progress: UpgradeProgress
) -> tuple[int, str]:
    """Galera and a non-InnoDB Go table: CREATE the new table, INSERT ... SELECT the converted
    rows into it, then one atomic RENAME TABLE swaps it in; the old table is kept aside.
    Returns (rows copied, the old table's new name)."""
    new, backup = m.copy_names()
    if await table_exists(link, backup):
        raise SessionSchemaError(
            f"table `{backup}` exists (kept by an earlier upgrade?): rename or drop it, then run upgrade "
            "again; nothing was changed"
        )
    await _step(link, "clearing an unfinished copy", f"DROP TABLE IF EXISTS {_identifier(new)}")
    await _step(link, "creating the new table", create_table(new))
    copied = await _step(link, "copying rows", m.copy_legacy(new, keep_data=not drop_data), (max_lifetime,))
    await _step(link, "swapping the tables", m.swap(new, backup))
    data = "emptied their unreadable data" if drop_data else "kept their data"
    progress(
        UpgradeStep(
            f"copied {copied} rows into InnoDB: key = SHA-256 of the stored id, deadline = last write + "
            f"{max_lifetime}s; {data}"
        )
    )
    progress(
        UpgradeStep(
            f"swapped it in with one RENAME TABLE; the old table is kept as `{backup}` (drop it once you "
            "are satisfied). Galera does not replicate MyISAM rows: rows the Go application wrote "
            "through other nodes are only there, and were not copied"
        )
    )
    return copied, backup


async def _convert_rows(
    link: Link,
    m: UpgradeStatements,
    max_lifetime: int,
    drop_data: bool,
    batch_size: int,
    progress: UpgradeProgress,
) -> int:
    statement = m.convert_rows_drop_data if drop_data else m.convert_rows_keep_data
    _, rows = await link.execute(m.count_pending)
    total = int(rows[0][0])
    done = 0
    while True:
        count = await _step(link, "converting rows", statement, (max_lifetime, batch_size))
        done += count
        progress(RowsConverted(count, done, total))
        if count < batch_size:
            return done
