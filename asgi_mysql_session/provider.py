"""The provider: sessions by id, as the Go provider's Read/Exist/Regenerate/Destroy/All/GC.

It speaks session ids only. Hashing, rows by key (``table.py``), the statement path
(``gateway.py``), serialized requests (``serialized.py``) and the lifetime rules
(``rules.py``) are its parts; here they are wired together and opened and closed with the
event loop that uses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from . import sql
from .coordination import Cluster, Leases, cluster_option
from .driver import Pool
from .dsn import DSN, parse_dsn
from .errors import InvalidSessionId, SessionConfigError
from .gateway import Gateway
from .gc import ExpirySweeper
from .ids import hash_id, is_well_formed, new_session_id
from .lifecycle import LoopBound
from .metrics import SessionObserver
from .pool import PoolState, connect_kwargs
from .rules import Clock, Rules
from .schema import SessionSchema, missing_table_message
from .serialized import SessionLocks
from .store import SessionStore
from .table import SessionTable

logger = logging.getLogger("asgi_mysql_session")


@dataclass(frozen=True)
class OwnedSession:
    """One live session of an owner, as ``sessions_of`` lists it (never the id itself)."""

    key_hash: str
    created: int
    expiry: int


class MySQLSessionProvider(LoopBound):
    """Sessions in one MySQL/MariaDB table, reached through an aiomysql pool.

    ``dsn`` is ``mysql://user:pass@host:port/db`` with optional query options
    ``pool_min``, ``pool_max``, ``pool_recycle``, ``connect_timeout``, ``timeout``,
    ``unix_socket`` and ``host_order``; several hosts (``host1:port,host2:port``) are failed
    over between (see ``pool.py``). Pass ``pool=`` instead to share an aiomysql pool you own; it must be
    created with ``autocommit=True`` and ``client_flag=CLIENT.FOUND_ROWS``
    (see :meth:`connect_kwargs`).

    Session reads that arrive in the same event-loop turn share one SELECT
    (``coalesce_reads=False`` sends each on its own; see ``asgi_mysql_session.coalesce``).
    A list or dict stored in 1 KB or more is decoded only when the app first asks for it
    (``lazy_values=False`` decodes every row whole, for C code that reads the session's
    dict storage directly, such as ``orjson.dumps(request.session)``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Pool | None = None,
        table: str = "session",
        max_lifetime: int = 3600,
        absolute_lifetime: int | None = 86400,
        touch_after: int | None = None,
        rotation_grace: int = 300,
        max_size: int = 65536,
        create_table: bool = False,
        timeout: float = 5.0,
        write_retries: int = 10,
        gc_interval: float | None = 600.0,
        gc_batch_size: int = 1000,
        gc_pause: float = 0.05,
        lock_connections: int | None = None,
        clock: Clock = time.time,
        observer: SessionObserver | None = None,
        cluster: str | Cluster = "auto",
        causal_reads: bool = True,
        lease_ttl: float = 15.0,
        coalesce_reads: bool = True,
        lazy_values: bool = True,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise SessionConfigError("pass exactly one of dsn= or pool=")
        parsed: DSN | None = parse_dsn(dsn) if dsn is not None else None
        self.table = sql.check_table_name(table)
        if lock_connections is not None and lock_connections < 1:
            raise SessionConfigError("lock_connections must be >= 1, or None for half the pool")
        if gc_interval is not None and gc_interval <= 0:
            raise SessionConfigError("gc_interval must be positive, or None to disable sweeps")
        if gc_batch_size < 1 or gc_pause < 0:
            raise SessionConfigError("gc_batch_size must be >= 1, write_retries and gc_pause >= 0")
        self._rules = Rules(
            max_lifetime, absolute_lifetime, touch_after, rotation_grace, max_size, write_retries, clock
        )
        self.create_table = create_table
        self.gc_interval = gc_interval
        #: Receives events for logs and metrics (see ``asgi_mysql_session.metrics``).
        self.observer = observer or SessionObserver()
        #: On Galera: leases (sweep, serialized requests) instead of node-local GET_LOCK.
        self._leases = Leases(self.table, lease_ttl)
        self._gateway = Gateway(
            parsed,
            pool,
            timeout=parsed.timeout if parsed and parsed.timeout else timeout,
            observer=self.observer,
            cluster=cluster_option(cluster),
            causal_reads=causal_reads,
        )
        self._gateway.before_use = self._reopen_if_loop_ended
        self._gateway.missing_table = lambda: missing_table_message(self.table, self.database)
        self._table = SessionTable(
            self._gateway,
            self.table,
            self._rules,
            self.observer,
            self._leases,
            coalesce_reads=coalesce_reads,
            lazy_values=lazy_values,
            gc_batch_size=gc_batch_size,
            gc_pause=gc_pause,
        )
        self._locks = SessionLocks(self._table, lock_connections)
        self._sweeper: ExpirySweeper | None = None
        super().__init__()

    # -- settings (the rules and the gateway hold them) ---------------------------------

    @property
    def max_lifetime(self) -> int:
        return self._rules.max_lifetime

    @property
    def absolute_lifetime(self) -> int | None:
        return self._rules.absolute_lifetime

    @property
    def touch_after(self) -> int:
        return self._rules.touch_step

    @property
    def rotation_grace(self) -> int:
        return self._rules.rotation_grace

    @property
    def max_size(self) -> int:
        return self._rules.max_size

    @property
    def write_retries(self) -> int:
        return self._rules.write_retries

    @property
    def timeout(self) -> float:
        """Seconds each statement may take, acquiring its connection included."""
        return self._gateway.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._gateway.timeout = seconds

    @property
    def gc_batch_size(self) -> int:
        return self._table.gc_batch_size

    @gc_batch_size.setter
    def gc_batch_size(self, rows: int) -> None:
        self._table.gc_batch_size = rows

    @property
    def gc_pause(self) -> float:
        return self._table.gc_pause

    @property
    def cluster(self) -> Cluster | None:
        """What ``open()`` found: ``Cluster.SINGLE`` or ``Cluster.GALERA`` (None before)."""
        return self._gateway.cluster

    @property
    def causal_reads(self) -> bool:
        return self._gateway.causal_reads

    @property
    def statements(self) -> Counter[str]:
        """Statements run since creation by kind ("select", "insert", "update", "delete"...),
        a ``collections.Counter`` cheap to read for metrics and tests."""
        return self._gateway.statements

    @property
    def database(self) -> str:
        """The database the table is in (known once open, or from the DSN)."""
        return self._gateway.database

    @property
    def leases_lost(self) -> int:
        """On Galera: leases found taken over at renewal (held past their ttl); should stay 0."""
        return self._leases.lost

    @property
    def sweeper(self) -> ExpirySweeper | None:
        """The background sweep while the provider is open (None with ``gc_interval=None``)."""
        return self._sweeper

    def pool_state(self) -> PoolState:
        """How many connections the pool holds and, with several hosts, which are up."""
        return self._gateway.pool_state()

    def now(self) -> int:
        return self._rules.now()

    # -- lifecycle -------------------------------------------------------------------

    @staticmethod
    def connect_kwargs() -> dict[str, Any]:
        """The aiomysql connection options the provider relies on, for pools you build yourself."""
        return connect_kwargs()

    # The LoopBound hooks: what opening, closing and abandoning mean for a provider.

    def _bound_loop(self) -> asyncio.AbstractEventLoop | None:
        return self._gateway.loop

    def _reopenable(self) -> bool:
        return self._gateway.owns_pool

    async def _start(self) -> None:
        await self._gateway.open()
        try:
            await self.schema().verify(create=self.create_table)
        except BaseException:
            await self._gateway.close()
            raise
        if self.gc_interval is not None:
            self._sweeper = ExpirySweeper(self, interval=self.gc_interval)
            self._sweeper.start()

    async def _stop(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()
            self._sweeper = None
        if self._opened:
            await self._gateway.close()

    def _forget(self) -> list[asyncio.Task[None] | None]:
        self._gateway.abandon()
        self._locks.forget()
        sweeper, self._sweeper = self._sweeper, None
        return [sweeper.task if sweeper is not None else None]

    # -- ids -------------------------------------------------------------------------

    @staticmethod
    def new_session_id() -> str:
        """A fresh id: 256 bits from ``secrets``, URL-safe."""
        return new_session_id()

    @staticmethod
    def _checked(sid: str, what: str = "sid") -> str:
        if not is_well_formed(sid):
            raise InvalidSessionId(
                f"{what} is not a well-formed session id (16-128 characters of A-Z a-z 0-9 - _); "
                "ids from clients go through provider.load() or is_valid_session_id() first"
            )
        return sid

    # -- the Go provider's API -------------------------------------------------------
    #
    # read/exist/regenerate/destroy take ids your own code minted (new_session_id) and
    # refuse malformed ones with InvalidSessionId; load() is for ids from clients.

    def new_session(self) -> SessionStore:
        """An empty session; its id is minted when it is first saved."""
        return SessionStore(self._table)

    async def read(self, sid: str) -> SessionStore:
        """The live session under ``sid``, or an empty new store bound to it (one SELECT).

        Like the Go provider's Read, an unknown ``sid`` is adopted: a later save stores the
        session under it. For ids that come from clients use :meth:`load`, which never adopts.
        """
        store = SessionStore(self._table, self._checked(sid))
        await store.read()
        return store

    async def load(self, sid: str | None) -> SessionStore:
        """The session a client's id names, with the middleware's rules (one SELECT at most).

        A malformed, unknown, expired or logged-out id gives an empty store whose id is
        minted fresh if it is ever saved: a client can never choose its own id. A
        superseded id (rotated away by a login) gives an empty store that refuses to save
        (``store.superseded``), so a late request cannot replace the newer session.
        """
        store = self.new_session()
        await store.load(sid)
        return store

    async def exist(self, sid: str) -> bool:
        return await self._table.live(hash_id(self._checked(sid)))

    async def regenerate(self, old_sid: str, new_sid: str) -> SessionStore:
        """Move the session to ``new_sid`` at once; the old id is dead (superseded) at once."""
        self._checked(new_sid, "new_sid")
        store = SessionStore(self._table, new_sid)
        if await self._table.rename(hash_id(self._checked(old_sid, "old_sid")), hash_id(new_sid)):
            await store.read()
        return store

    async def destroy(self, sid: str) -> bool:
        """Delete the session; True if a row was there."""
        deleted = await self._table.delete(hash_id(self._checked(sid)))
        self.observer.sessions_destroyed(int(deleted))
        return deleted

    async def all(self) -> int:
        """How many live (unexpired) sessions there are."""
        return await self._table.count()

    async def gc(self, batch_size: int | None = None) -> int:
        """Delete expired rows in batches now; returns how many."""
        swept = await self.sweep(batch_size=batch_size)
        return swept or 0

    async def sweep(
        self,
        *,
        batch_size: int | None = None,
        exclusive: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> int | None:
        """``gc`` with its options: ``exclusive`` sweeps only if no other process is
        sweeping this table (else returns None; a lease on Galera), and ``on_batch`` is
        called with each batch's count (progress)."""
        return await self._table.sweep(batch_size=batch_size, exclusive=exclusive, on_batch=on_batch)

    # -- owners ("log out everywhere") ----------------------------------------------

    async def sessions_of(self, owner: str) -> list[OwnedSession]:
        return [OwnedSession(*row) for row in await self._table.of_owner(owner)]

    async def destroy_owner(self, owner: str) -> int:
        """End every session bound to ``owner`` in one statement; returns how many."""
        count = await self._table.delete_owner(owner)
        self.observer.sessions_destroyed(count)
        return count

    # -- serialized requests ---------------------------------------------------------

    @asynccontextmanager
    async def session_lock(self, sid: str, timeout: float) -> AsyncIterator[bool]:
        """Hold the session's lock: requests of one session run one at a time, across processes.

        Yields False, holding nothing, when no live session has this id: the lock is only
        taken for a live session (by one statement that checks and locks), so an id made up
        by a client never holds a connection past that statement. Waiters of this process
        queue first, then for one of the lock connections (at most half the pool,
        ``lock_connections``). Raises ``SessionLockTimeout`` when the lock is not had within
        ``timeout`` seconds.
        """
        async with self._locks.hold(hash_id(self._checked(sid)), timeout) as held:
            yield held

    # -- the table -------------------------------------------------------------------

    def schema(self, *, remedy: str | None = None) -> SessionSchema:
        """The table's DDL, check, upgrade and maintenance; usable before ``open()``.

        ``remedy`` replaces the library's advice in the error about a missing table.
        """
        return SessionSchema(self._gateway, self.table, self.now, remedy=remedy)
