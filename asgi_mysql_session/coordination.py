"""What kind of server the provider talks to, and coordination that holds on a Galera cluster.

On a single MySQL/MariaDB server (or a primary with replicas) the provider coordinates with
named locks (GET_LOCK), exactly as before. On a Galera cluster named locks are local to the
node that took them, so the provider instead

- asks every pooled connection for causal reads (``SET SESSION wsrep_sync_wait = 1``, once per
  connection): a read waits until the node has applied every write committed anywhere in the
  cluster before it started, so a session written through one node is read through another;
- holds *leases*: rows of a small InnoDB table (``{table}_lease``), claimed by conditional
  writes that Galera certifies cluster-wide, with an expiry so that a dead holder's lease
  lapses. The background sweep holds one per table; a serialized request one per session,
  renewed while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from typing import Any

from . import driver, sql
from .errors import SessionConfigError, SessionError, SessionLockTimeout

logger = logging.getLogger("asgi_mysql_session")

#: Runs one statement: (statement, args) -> (matched rows, fetched rows).
Execute = Callable[[str, Sequence[Any]], Awaitable[tuple[int, Sequence[Any]]]]

#: The statement each pooled connection runs once on a Galera cluster, for causal reads.
CAUSAL_READS = "SET SESSION wsrep_sync_wait = 1"


class Cluster(str, Enum):
    """The kind of server the provider found at ``open()`` (``provider.cluster``)."""

    SINGLE = "single"  #: one server (or a primary with asynchronous replicas): named locks
    GALERA = "galera"  #: a Galera cluster (MariaDB Galera, Percona XtraDB Cluster): leases

    def __str__(self) -> str:
        return self.value


def cluster_option(value: str | Cluster) -> Cluster | None:
    """The provider's ``cluster=`` option: None for "auto" (detect at open)."""
    if value == "auto":
        return None
    try:
        return Cluster(value)
    except ValueError:
        raise SessionConfigError(f"cluster must be 'auto', 'single' or 'galera', not {value!r}") from None


def wsrep_on(value: Any) -> bool:
    """Whether ``@@wsrep_on`` says Galera replication is on (1, or 'ON' on some servers)."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode()
    return str(value).strip().upper() in ("1", "ON")


async def detect(conn: driver.Connection) -> Cluster:
    """Ask the server on ``conn`` (an aiomysql connection) whether it is a Galera node.

    MariaDB always has ``@@wsrep_on`` (0 unless Galera is on); MySQL has no such variable
    and answers error 1193, which means a single server too.
    """
    try:
        await driver.send(conn, "SELECT @@wsrep_on")
    except driver.DriverError as exc:
        if driver.error_code(exc) == driver.UNKNOWN_VARIABLE:
            return Cluster.SINGLE
        raise
    rows = driver.rows(conn)
    return Cluster.GALERA if rows and wsrep_on(rows[0][0]) else Cluster.SINGLE


def new_holder() -> str:
    """A token naming one claim of a lease (32 hex characters)."""
    return uuid.uuid4().hex


def _millis() -> int:
    return int(time.time() * 1000)


class Leases:
    """Leases on the lease table of one session table.

    A claim is one or two statements: ``INSERT IGNORE`` of the row (the lease was free) or,
    when a row is there, an ``UPDATE`` that takes it over only if it lapsed. Galera certifies
    both cluster-wide, so of two claims racing on two nodes one commits and the other gets
    error 1213, which the provider retries; the retry sees the winner's row. A lease is
    given back by a DELETE conditioned on the holder, and kept by a renewal every third of
    ``ttl`` while it is held (:meth:`kept`).
    """

    def __init__(self, table: str, ttl: float) -> None:
        if ttl < 1:
            raise SessionConfigError("lease_ttl must be at least 1 second")
        self.sql = sql.lease_statements(table)
        self.ttl = ttl
        #: Renewals that found the lease gone (taken over after it lapsed); should stay 0.
        self.lost = 0

    def _expires(self) -> int:
        return _millis() + int(self.ttl * 1000)

    async def claim(self, execute: Execute, name: str, holder: str) -> bool:
        """Take the lease ``name`` for ``holder`` if it is free or lapsed (1-2 statements)."""
        inserted, _ = await execute(self.sql.claim_free, (name, holder, self._expires()))
        if inserted == 1:
            return True
        now = _millis()
        taken, _ = await execute(self.sql.claim_lapsed, (holder, now + int(self.ttl * 1000), name, now))
        return taken == 1

    async def wait(self, execute: Execute, name: str, holder: str, timeout: float) -> None:
        """Claim the lease, polling with backoff (10 ms doubling to 250 ms, jittered) for
        up to ``timeout`` seconds; raises ``SessionLockTimeout`` if it stays held."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        while not await self.claim(execute, name, holder):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionLockTimeout(f"session busy: no lock within {timeout:g}s")
            await asyncio.sleep(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, 0.25)

    async def renew(self, execute: Execute, name: str, holder: str) -> bool:
        count, _ = await execute(self.sql.renew, (self._expires(), name, holder))
        return count == 1

    async def release(self, execute: Execute, name: str, holder: str) -> None:
        """Give the lease back; if that fails it lapses after ``ttl`` by itself."""
        try:
            await execute(self.sql.release, (name, holder))
        except SessionError as exc:
            logger.warning("lease %s not released (it lapses within %gs): %s", name, self.ttl, exc)

    @asynccontextmanager
    async def kept(self, execute: Execute, name: str, holder: str) -> AsyncIterator[None]:
        """Renew the held lease every ``ttl / 3`` seconds until the block ends, then release it.

        The block is not interrupted if a renewal fails: a failed renewal is logged and
        retried at the next interval (a third of the lease is the margin for that).
        """
        task = asyncio.get_running_loop().create_task(
            self._renewing(execute, name, holder), name=f"asgi_mysql_session lease {name[:20]}"
        )
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait([task])  # never raises the renewer's CancelledError, nor eats ours
            await self.release(execute, name, holder)

    async def _renewing(self, execute: Execute, name: str, holder: str) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.renew(execute, name, holder):
                    self.lost += 1
                    logger.warning("lease %s was lost: held past its %gs without renewal", name, self.ttl)
                    return
            except SessionError as exc:
                logger.warning("lease %s not renewed, retrying in %gs: %s", name, self.ttl / 3, exc)
