"""Serialized requests: one request of a session at a time, across processes and nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from .coordination import Cluster, new_holder
from .errors import SessionError, SessionLockTimeout
from .link import bounded
from .locks import KeyedLocks
from .table import SessionTable


class SessionLocks:
    """Serialized requests: one request of a session at a time, across processes.

    On one server the lock is a named lock (GET_LOCK) held on a pooled connection; on
    Galera, where named locks are node-local, a lease row (``coordination.Leases``).
    """

    def __init__(self, table: SessionTable, lock_connections: int | None) -> None:
        self.table = table
        self.gateway = table.gateway
        self._requests = KeyedLocks()
        self._size = lock_connections
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        """Lock holders share at most half the pool, so ordinary requests always find one.

        A serialized request holds its connection for the whole handler (slow clients
        included); without this cap, holders of live sessions could take every connection.
        """
        slots = self._slots
        if slots is None:
            size = self._size if self._size is not None else max(1, self.gateway.max_connections // 2)
            slots = self._slots = asyncio.Semaphore(size)
        return slots

    def forget(self) -> None:
        """Drop state bound to an event loop that ended."""
        self._slots = None
        self._requests = KeyedLocks()

    @asynccontextmanager
    async def hold(self, key_hash: str, timeout: float) -> AsyncIterator[bool]:
        """Hold the session's lock while the block runs (see ``provider.session_lock``)."""
        local = self._requests
        slots = self.slots
        deadline = time.monotonic() + timeout
        async with AsyncExitStack() as holding:
            try:
                await bounded(local.acquire(key_hash), timeout)
                holding.callback(local.release, key_hash)
                await bounded(slots.acquire(), max(0.0, deadline - time.monotonic()))
                holding.callback(slots.release)
            except TimeoutError:
                raise SessionLockTimeout(f"session busy: no lock within {timeout:g}s") from None
            locked = self._leased if self.gateway.cluster is Cluster.GALERA else self._locked
            held = await holding.enter_async_context(locked(key_hash, max(0.0, deadline - time.monotonic())))
            if not held:
                await holding.aclose()  # an unknown id holds nothing while its request runs
            yield held

    @asynccontextmanager
    async def _locked(self, key_hash: str, wait: float) -> AsyncIterator[bool]:
        name = f"asgi_mysql_session:{key_hash[:40]}"
        table = self.table
        now = table.rules.now()
        async with self.gateway.connection() as link:
            _, rows = await link.execute(
                table.sql.lock_if_live,
                (name, wait, key_hash, now, table.rules.born_after(now)),
                extra_time=wait,
            )
            if not rows:  # no live session: nothing to serialize, nothing held
                yield False
                return
            if rows[0][0] != 1:
                raise SessionLockTimeout(f"session busy: no lock within {wait:g}s")
            try:
                async with self.gateway.holding(link):
                    yield True
            except BaseException:
                link.broken = True  # closing the connection frees the named lock
                raise
            try:
                await link.execute(table.sql.release_lock, (name,))
            except SessionError:
                link.broken = True  # the response is out: free the lock by closing

    @asynccontextmanager
    async def _leased(self, key_hash: str, wait: float) -> AsyncIterator[bool]:
        """``_locked`` on Galera: a per-session lease row instead of a node-local named lock.

        A causal read first checks that the session is live (a made-up id claims nothing),
        then the lease is claimed, polling with backoff for up to ``wait`` seconds. No
        connection is held while the handler runs: the lease is a row, renewed every third of
        ``lease_ttl`` while the request lasts and deleted (by its holder only) at the end.
        Common case: SELECT + INSERT + DELETE, three statements for GET_LOCK's two.
        """
        if not await self.table.live(key_hash):
            yield False
            return
        name = f"session:{key_hash}"
        holder = new_holder()
        leases, execute = self.table.leases, self.gateway.execute
        await leases.wait(execute, name, holder, wait)
        async with leases.kept(execute, name, holder):
            yield True
