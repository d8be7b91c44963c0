"""SessionSchema: create, check, verify, upgrade and maintain the session table (the public API).

``SessionSchema`` works before ``provider.open()`` and on a missing or old table: it reaches the
database through the provider's gateway (``_link``), and reports progress through callbacks
(it prints nothing). The DDL and the check are in :mod:`asgi_mysql_session.ddl`, converting the
Go provider's table in :mod:`asgi_mysql_session.upgrade`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from . import sql
from .coordination import Cluster
from .ddl import (
    REQUIRED_COLUMNS,
    SchemaReport,
    create_lease_table,
    create_table,
    inspect_table,
    report_of,
    schema_sql,
    table_exists,
)
from .errors import SessionBackendError, SessionSchemaError
from .gateway import Gateway
from .link import Link
from .upgrade import RowsConverted, UpgradeProgress, UpgradeReport, UpgradeStep, upgrade_table

__all__ = [
    "RowsConverted",
    "SchemaReport",
    "SessionSchema",
    "SessionStats",
    "UpgradeProgress",
    "UpgradeReport",
    "UpgradeStep",
    "missing_table_message",
    "schema_sql",
]

logger = logging.getLogger("asgi_mysql_session")

#: What open() checks: (COLUMN_NAME, DATA_TYPE, IS_NULLABLE) of a table.
_COLUMNS = (
    "SELECT COLUMN_NAME, DATA_TYPE, IS_NULLABLE "
    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
)


@asynccontextmanager
async def _link(gateway: Gateway) -> AsyncIterator[Link]:
    """One connection, without the table check: from the provider's pool once its gateway was
    opened (so its flags and the kind of server are known), otherwise from the gateway opened
    for this one use (a pool of its own is closed after it; a lent one stays), so a missing or
    old table can be reached before ``open()``."""
    if gateway.is_open and gateway.cluster is not None:
        async with gateway.connection() as link:
            yield link
        return
    await gateway.open()
    try:
        async with gateway.connection() as link:
            yield link
    finally:
        await gateway.close()


def missing_table_message(table: str, database: str, remedy: str | None = None) -> str:
    """The error for a missing session table; ``remedy`` replaces the library's advice."""
    where = f"session table `{table}` does not exist in database `{database}`"
    if remedy is not None:
        return f"{where}: {remedy}"
    return (
        f"{where}: pass create_table=True to MySQLSessionProvider, run "
        f"`asgi-mysql-session init --table {table}`, or have a DBA apply the DDL that "
        f"`asgi-mysql-session init --print-sql --table {table}` prints"
    )


# -- maintenance statements --------------------------------------------------------------------


@dataclass(frozen=True)
class SessionStats:
    """Counts, data sizes (bytes, of live sessions) and deadlines (unix seconds) of a table."""

    table: str
    database: str
    now: int
    live: int
    expired: int
    #: Live sessions with an owner, and how many distinct owners they have.
    with_owner: int
    owners: int
    #: Nearest-rank percentiles of the live sessions' data sizes (None: no live session).
    data_p50: int | None
    data_p90: int | None
    data_p99: int | None
    data_max: int | None
    earliest_deadline: int | None
    latest_deadline: int | None
    #: The deadline of the oldest row that expired but was not swept yet.
    oldest_expired_deadline: int | None


def _stats_statements(table: str) -> tuple[str, str, str]:
    t = f"`{sql.check_table_name(table)}`"
    live = f"FROM {t} WHERE session_expiry > %s AND session_version > 0"
    return (
        "SELECT COUNT(*), COUNT(session_owner), COUNT(DISTINCT session_owner), "
        f"MIN(session_expiry), MAX(session_expiry) {live}",
        f"SELECT COUNT(*), MIN(session_expiry) FROM {t} WHERE session_expiry <= %s",
        # Nearest-rank percentiles of the live rows' data sizes, ranked on the server in one
        # statement (window functions: MariaDB >= 10.2, MySQL 8), nothing fetched but 4 numbers.
        "SELECT MAX(CASE WHEN rn = CEIL(0.50 * total) THEN n END), "
        "MAX(CASE WHEN rn = CEIL(0.90 * total) THEN n END), "
        "MAX(CASE WHEN rn = CEIL(0.99 * total) THEN n END), MAX(n) "
        "FROM (SELECT LENGTH(session_data) AS n, "
        "ROW_NUMBER() OVER (ORDER BY LENGTH(session_data)) AS rn, "
        f"COUNT(*) OVER () AS total {live}) AS ranked",
    )


def _policy_statement(table: str) -> str:
    """Applies a (lowered) lifetime policy to live rows, a batch at a time: the deadline
    becomes at most now + max_lifetime and created + absolute lifetime.
    Parameters: (idle_cap, absolute, idle_cap, absolute, now, limit)."""
    return (
        f"UPDATE `{sql.check_table_name(table)}` SET session_expiry = LEAST(session_expiry, %s, "
        "IF(session_created = 0, session_expiry, session_created + %s)) "
        "WHERE session_expiry > LEAST(%s, IF(session_created = 0, session_expiry, session_created + %s)) "
        "AND session_expiry > %s LIMIT %s"
    )


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


# -- the public API ----------------------------------------------------------------------------


class SessionSchema:
    """The session table's shape: create, check, verify, upgrade and maintain it.

    Get it from ``provider.schema()``. Works before ``provider.open()`` (it then connects for
    each call) and on a missing or old table. ``remedy`` replaces the library's advice in the
    error about a missing table (a tool names its own command there).
    """

    def __init__(
        self, gateway: Gateway, table: str, now: Callable[[], int], *, remedy: str | None = None
    ) -> None:
        self._gateway = gateway
        self._now = now
        self.table = table
        self.remedy = remedy

    @property
    def lease_table(self) -> str:
        """The table of the leases that replace named locks on a Galera cluster."""
        return sql.lease_table_name(self.table)

    def ddl(self, *, galera: bool = False) -> str:
        """schema.sql for this table, as ``init --print-sql [--galera]`` prints it."""
        return schema_sql(self.table, galera=galera)

    def _cluster(self) -> Cluster:
        """The kind of server, known once a link was had (the gateway's health check)."""
        cluster = self._gateway.cluster
        assert cluster is not None
        return cluster

    def _missing(self) -> SessionSchemaError:
        return SessionSchemaError(missing_table_message(self.table, self._gateway.database, self.remedy))

    async def create(self) -> bool:
        """Create the table (and on Galera the lease table) unless there; True if it was made.

        An existing table is left as it is (``check()`` says whether it is usable).
        """
        async with _link(self._gateway) as link:
            existed = await table_exists(link, self.table)
            await link.execute(create_table(self.table))  # IF NOT EXISTS: never touches a table
            if self._cluster() is Cluster.GALERA:
                await link.execute(create_lease_table(self.table))  # IF NOT EXISTS as well
        return not existed

    async def check(self) -> SchemaReport:
        """Compare the table with schema.sql; raises ``SessionSchemaError`` if there is none."""
        async with _link(self._gateway) as link:
            state = await inspect_table(link, self.table)
            if state is None:
                raise self._missing()
            cluster = self._cluster()
        return report_of(state, self.table, self._gateway.database, cluster)

    async def verify(self, *, create: bool) -> None:
        """What ``open()`` runs: the table (and on Galera the lease table) has what the provider
        needs, created first if missing and ``create``; raises ``SessionSchemaError`` otherwise."""
        table = self.table
        async with _link(self._gateway) as link:
            _, rows = await link.execute(_COLUMNS, (table,))
            if not rows and create:
                await link.execute(create_table(table))
                _, rows = await link.execute(_COLUMNS, (table,))
            if rows and self._cluster() is Cluster.GALERA:
                _, lease = await link.execute(_COLUMNS, (self.lease_table,))
                if not lease and create:
                    await link.execute(create_lease_table(table))
                    _, lease = await link.execute(_COLUMNS, (self.lease_table,))
                if not lease:
                    raise self._failed(
                        f"lease table `{self.lease_table}` does not exist in database "
                        f"`{self._gateway.database}`, and this is a Galera cluster, where named locks "
                        f"are node-local: create it with `asgi-mysql-session init --table {table}` "
                        "(or create_table=True), or print its DDL with "
                        f"`asgi-mysql-session init --print-sql --galera --table {table}`"
                    )
        if not rows:
            raise self._failed(missing_table_message(table, self._gateway.database, self.remedy))
        found = {name.lower(): (dtype.lower(), nullable) for name, dtype, nullable in rows}
        wrong = [
            f"{column} ({dtype}{' NOT NULL' if column != 'session_owner' else ''})"
            for column, dtype in REQUIRED_COLUMNS.items()
            if found.get(column, ("missing", ""))[0] != dtype
            or (column != "session_owner" and found[column][1] != "NO")
        ]
        if wrong:
            raise self._failed(
                f"table `{table}` in database `{self._gateway.database}` lacks or mistypes columns: "
                f"{', '.join(wrong)}; `asgi-mysql-session check --table {table}` says what "
                f"differs and `asgi-mysql-session upgrade --table {table}` converts a table "
                "made by the Go provider"
            )

    def _failed(self, message: str) -> SessionBackendError:
        """Logged once and counted, as every failure of the provider's."""
        return self._gateway.failed(message, "schema", SessionSchemaError)

    async def upgrade(
        self,
        *,
        max_lifetime: int = 3600,
        drop_data: bool = True,
        batch_size: int = 10000,
        progress: UpgradeProgress | None = None,
    ) -> UpgradeReport:
        """Convert the Go provider's table and give the table schema.sql's definitions, in place.

        See :func:`asgi_mysql_session.upgrade.upgrade_table`; ``max_lifetime`` is the Go application's
        session lifetime, ``drop_data=False`` keeps the unreadable Go data (each such row is
        dropped when first read).
        """
        async with _link(self._gateway) as link:
            state = await inspect_table(link, self.table)
            if state is None:
                raise self._missing()
            return await upgrade_table(
                link,
                state,
                table=self.table,
                database=self._gateway.database,
                cluster=self._cluster(),
                max_lifetime=max_lifetime,
                drop_data=drop_data,
                batch_size=batch_size,
                progress=progress or (lambda event: None),
            )

    async def stats(self) -> SessionStats:
        """Live and expired sessions, data sizes of the live ones, deadlines and owners."""
        now = self._now()
        live_stats, expired_stats, sizes = _stats_statements(self.table)
        async with _link(self._gateway) as link:
            _, live = await link.execute(live_stats, (now,))
            _, expired = await link.execute(expired_stats, (now,))
            _, percentiles = await link.execute(sizes, (now,))
        count, with_owner, owners, earliest, latest = live[0]
        expired_count, oldest_expired = expired[0]
        p50, p90, p99, largest = percentiles[0]
        return SessionStats(
            table=self.table,
            database=self._gateway.database,
            now=now,
            live=int(count),
            expired=int(expired_count),
            with_owner=int(with_owner),
            owners=int(owners),
            data_p50=_int(p50),
            data_p90=_int(p90),
            data_p99=_int(p99),
            data_max=_int(largest),
            earliest_deadline=_int(earliest),
            latest_deadline=_int(latest),
            oldest_expired_deadline=_int(oldest_expired),
        )

    async def apply_policy(
        self, max_lifetime: int | None, absolute_lifetime: int | None, batch_size: int = 1000
    ) -> int:
        """Bring every live session within a (lowered) lifetime policy now: deadline at most
        now + ``max_lifetime`` and creation + ``absolute_lifetime`` (None: no such bound), in
        batches of ``batch_size``; returns how many sessions got an earlier deadline."""
        statement = _policy_statement(self.table)
        never = 2**32 - 1  # INT UNSIGNED's largest value: "no bound"
        total = 0
        async with _link(self._gateway) as link:
            while True:
                now = self._now()
                idle = now + max_lifetime if max_lifetime is not None else never
                absolute = absolute_lifetime if absolute_lifetime is not None else never
                changed, _ = await link.execute(statement, (idle, absolute, idle, absolute, now, batch_size))
                total += changed
                if changed < batch_size:
                    return total
