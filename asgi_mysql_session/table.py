"""The session table's rows, by key hash: what ``SessionRows`` promises, in SQL on the gateway.

Each method is one or two single-row statements on the primary key (or a batched delete
on the expiry index); the lifetime rules are applied by the server in every WHERE clause
(``sql.LIVE``), so a row past them is never read, written or revived.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from . import sql
from .coalesce import ReadCoalescer
from .coordination import Cluster, Leases, new_holder
from .driver import RETRYABLE, error_code
from .errors import SessionBackendError, SessionDecodeError
from .gateway import Gateway
from .link import STATEMENT_RETRIES, retry_pause
from .locks import KeyedLocks
from .metrics import SessionObserver
from .rows import Row
from .rules import Rules
from .serializer import decode

logger = logging.getLogger("asgi_mysql_session")


class _Deadlock(Exception):
    """A transaction lost a deadlock (or lock wait) and was rolled back whole."""


class SessionTable:
    """Rows of one table (a :class:`~asgi_mysql_session.rows.SessionRows`), plus the sweep
    and the owner queries."""

    def __init__(
        self,
        gateway: Gateway,
        table: str,
        rules: Rules,
        observer: SessionObserver,
        leases: Leases,
        *,
        coalesce_reads: bool,
        lazy_values: bool = True,
        gc_batch_size: int,
        gc_pause: float,
    ) -> None:
        self.gateway = gateway
        self.table = table
        self.sql = sql.statements(table)
        self.rules = rules
        self.observer = observer
        self.leases = leases
        self.save_locks = KeyedLocks()
        self.gc_batch_size = gc_batch_size
        #: Seconds to rest between full sweep batches, so a big sweep does not starve
        #: the database of CPU for the requests being served meanwhile.
        self.gc_pause = gc_pause
        #: Reads of one event-loop turn share one SELECT (asgi_mysql_session.coalesce).
        self.coalescer = ReadCoalescer(gateway, self.sql, self.select_one) if coalesce_reads else None
        #: Big lists and dicts stay packed until the app asks for them (``serializer.Packed``).
        self.lazy_values = lazy_values

    # -- reads -------------------------------------------------------------------------

    async def lookup(self, key_hash: str) -> Row | None:
        """The row in policy, tombstones included (``row.superseded``), or None.

        A row that cannot be decoded is logged and removed.
        """
        rules = self.rules
        now = rules.now()
        gateway = self.gateway
        coalescer = self.coalescer
        loop = gateway.loop
        if (
            coalescer is not None
            and loop is not None
            and gateway.task_on_loop() is not None
            and gateway.held() is None  # a serialized request reads on its locked connection
        ):
            found = await coalescer.select(key_hash, now, rules.born_after(now), loop)
        else:
            found = await self.select_one(key_hash, now, rules.born_after(now))
        if found is None:
            return None
        data, expiry, version, created, owner = found
        try:
            values = decode(data, lazy=self.lazy_values) if version else {}
        except SessionDecodeError as exc:
            logger.warning("dropping undecodable session %s: %s", key_hash[:12], exc)
            await self.delete(key_hash)
            return None
        return Row(data, values, expiry, version, created, owner)

    async def select_one(self, key_hash: str, now: int, born_after: int) -> sql.Unpacked | None:
        """The fields of the row in policy (one SELECT of one packed column), or None."""
        execute = self.gateway.execute
        _, rows = await execute(self.sql.select, (key_hash, now, born_after))
        if not rows:
            return None
        value = rows[0][0]
        if value is not None:
            return sql.unpack(value)
        # Too big to pack: read the columns one by one (a second SELECT, for such rows only).
        _, rows = await execute(self.sql.select_columns, (key_hash, now, born_after))
        if not rows:
            return None
        data, expiry, version, created, owner = rows[0]
        return bytes(data), int(expiry), int(version), int(created), owner

    async def fetch(self, key_hash: str) -> Row | None:
        """The live row, or None (unknown, expired, past the policy, or superseded)."""
        row = await self.lookup(key_hash)
        return None if row is None or row.superseded else row

    async def live(self, key_hash: str) -> bool:
        """Whether a live session has this key (one SELECT)."""
        now = self.rules.now()
        _, rows = await self.gateway.execute(self.sql.exist, (key_hash, now, self.rules.born_after(now)))
        return bool(rows)

    async def count(self) -> int:
        now = self.rules.now()
        _, rows = await self.gateway.execute(self.sql.count, (now, self.rules.born_after(now)))
        return int(rows[0][0])

    async def of_owner(self, owner: str) -> list[tuple[str, int, int]]:
        """(key hash, created, expiry) of each live session of ``owner``."""
        now = self.rules.now()
        _, rows = await self.gateway.execute(self.sql.of_owner, (owner, now, self.rules.born_after(now)))
        return [(str(key), int(created), int(expiry)) for key, created, expiry in rows]

    # -- writes ------------------------------------------------------------------------

    async def insert(self, key_hash: str, data: bytes, expiry: int, created: int, owner: str | None) -> None:
        await self.gateway.execute(self.sql.insert, (key_hash, data, expiry, created, owner))

    async def update(self, key_hash: str, data: bytes, expiry: int, owner: str | None, version: int) -> bool:
        """Conditional write; False if the row moved on (other version) or is gone."""
        now = self.rules.now()
        count, _ = await self.gateway.execute(
            self.sql.update, (data, expiry, owner, key_hash, version, now, self.rules.born_after(now))
        )
        return count == 1

    async def touch(self, key_hash: str, expiry: int) -> bool:
        now = self.rules.now()
        count, _ = await self.gateway.execute(
            self.sql.touch, (expiry, key_hash, now, self.rules.born_after(now))
        )
        return count == 1

    async def clamp(self, key_hash: str, expiry: int) -> bool:
        """Lower the deadline to ``expiry`` (a lowered max_lifetime); never raises it."""
        now = self.rules.now()
        count, _ = await self.gateway.execute(
            self.sql.clamp, (expiry, key_hash, now, self.rules.born_after(now))
        )
        return count == 1

    async def rename(self, old_hash: str, new_hash: str) -> bool:
        """Move a live row to a new key and leave a tombstone under the old one, atomically.

        The tombstone lets a late response about the old id leave the client's cookie
        alone (it is superseded, not unknown) for ``rotation_grace`` seconds; it never
        opens the session. Four statements on one connection: BEGIN, UPDATE, INSERT, COMMIT
        (one UPDATE without a grace). A deadlock rolls the whole transaction back and it is
        retried.
        """
        for attempt in range(STATEMENT_RETRIES):
            try:
                return await self._rename(old_hash, new_hash, self.rules.now())
            except _Deadlock:
                if attempt + 1 == STATEMENT_RETRIES:
                    raise self.gateway.failed("rotation kept deadlocking", "statement") from None
                await retry_pause(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _rename(self, old_hash: str, new_hash: str, now: int) -> bool:
        args = (new_hash, old_hash, now, self.rules.born_after(now))
        grace = self.rules.rotation_grace
        if not grace:
            count, _ = await self.gateway.execute(self.sql.rename, args)
            return count == 1
        async with self.gateway.connection() as link:
            try:
                await link.execute("BEGIN", retry=False)
                count, _ = await link.execute(self.sql.rename, args, retry=False)
                if count == 1:
                    await link.execute(self.sql.tombstone, (old_hash, now + grace), retry=False)
                await link.execute("COMMIT", retry=False)
            except SessionBackendError as exc:
                link.broken = True  # never hand back a connection inside a transaction
                cause = exc.__cause__
                if cause is not None and error_code(cause) in RETRYABLE:
                    raise _Deadlock from exc
                raise
            except BaseException:
                link.broken = True
                raise
        return count == 1

    async def delete(self, key_hash: str) -> bool:
        count, _ = await self.gateway.execute(self.sql.delete, (key_hash,))
        return count == 1

    async def delete_owner(self, owner: str) -> int:
        count, _ = await self.gateway.execute(self.sql.delete_owner, (owner,))
        return count

    # -- sweeping ----------------------------------------------------------------------

    def lock_name(self) -> str:
        digest = hashlib.sha256(f"{self.gateway.database}.{self.table}".encode()).hexdigest()[:40]
        return f"asgi_mysql_session:{digest}"

    async def sweep(
        self,
        *,
        batch_size: int | None = None,
        exclusive: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> int | None:
        """Delete expired rows in batches of ``batch_size`` until none are left.

        With ``exclusive`` the sweep first takes a named lock (GET_LOCK) so that only one
        process sweeps a table at a time; it returns None when another holds it. On Galera,
        where named locks are node-local, it holds the table's ``sweep`` lease instead
        (renewed while it runs, deleted at the end): one sweeper across every node.
        """
        gateway = self.gateway
        if exclusive and gateway.cluster is Cluster.GALERA:
            holder = new_holder()
            if not await self.leases.claim(gateway.execute, "sweep", holder):
                return None
            async with self.leases.kept(gateway.execute, "sweep", holder):
                return await self.sweep(batch_size=batch_size, on_batch=on_batch)
        batch = batch_size or self.gc_batch_size
        total = 0
        started = time.perf_counter()
        async with gateway.connection() as link:
            if exclusive:
                _, rows = await link.execute(self.sql.get_lock, (self.lock_name(),))
                if not rows or rows[0][0] != 1:
                    return None
            try:
                while True:
                    deleted, _ = await link.execute(self.sql.gc_batch, (self.rules.now(), batch))
                    total += deleted
                    if on_batch is not None:
                        on_batch(deleted)
                    if deleted < batch:
                        break
                    if self.gc_pause:
                        await asyncio.sleep(self.gc_pause)
            except BaseException:
                # Cancelled or failed mid-sweep: closing the connection frees the named
                # lock without another round trip that could hang or mask the error.
                link.broken = True
                raise
            if exclusive:
                await link.execute(self.sql.release_lock, (self.lock_name(),))
        self.observer.sweep(total, time.perf_counter() - started)
        return total
