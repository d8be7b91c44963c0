"""Session reads that arrive in the same event-loop turn go to the database as one SELECT.

Under load many requests reach ``SessionTable.lookup`` in one turn of the event loop (their
sockets became readable together). Each would cost a pooled connection, a round trip and
a result set parsed in Python; read together they cost one
``SELECT ... WHERE session_key IN (...)`` of at most ``BATCH`` keys. Nothing waits for a
timer. A read that finds no other read in flight is sent at once, alone, with the very
statement a separate read runs (a lone read is one plain SELECT and waits for nothing);
the reads that arrive while reads are in flight are collected until the end of the turn
and sent together in the next one (alone, with that same plain SELECT, if only one came).

Each caller waits on a future of its own. The statement runs in a task of its own, so a
caller that is cancelled leaves the others (and the statement) alone; a failure, the
statement deadline included, reaches every caller as the error a separate read raises.
Reads are grouped by their (now, born_after) so that a batch answers exactly what each
read would have answered alone.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any

from . import sql
from .gateway import Gateway

#: Reads one key alone: (key_hash, now, born_after) -> its fields, or None.
SelectOne = Callable[[str, int, int], Awaitable["sql.Unpacked | None"]]

#: Most keys in one statement; a turn with more sends several side by side. Small on
#: purpose: one statement for all the reads of a busy turn (30 of 32 connections) makes
#: them wait on one round trip and answer together, so their clients come back together
#: and the reads move as one convoy, the worker idle while the database works (0.90 of its
#: core busy at 32 keys, 0.97 at 8, for the 8 KB cart; bench/README.md). At 8, a turn
#: goes out on a few connections and the worker parses one result while the next is made.
BATCH = 8

_Waiters = dict[str, list["asyncio.Future[sql.Unpacked | None]"]]


class ReadCoalescer:
    """Batches the single-key reads of one event loop (see the module's docstring)."""

    __slots__ = (
        "_alone",
        "_inflight",
        "_loop",
        "_pending",
        "_scheduled",
        "_statements",
        "_tasks",
        "gateway",
        "limit",
        "select_one",
        "statements",
    )

    def __init__(
        self, gateway: Gateway, statements: sql.Statements, select_one: SelectOne, limit: int = BATCH
    ) -> None:
        self.gateway = gateway
        self.statements = statements
        self.select_one = select_one
        self.limit = limit
        #: Keys not sent yet, by (now, born_after), each with the futures of its callers.
        self._pending: dict[tuple[int, int], _Waiters] = {}
        self._scheduled = False
        #: The loop of the pending reads: a provider closed and opened again on another
        #: loop must not wait for a task that its first loop never ran.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: The callers of each statement being sent.
        self._inflight: dict[asyncio.Task[Any], _Waiters] = {}
        self._statements: dict[int, str] = {}
        #: Reads sent at once, alone, because no other read was in flight.
        self._alone = 0

    async def select(
        self, key_hash: str, now: int, born_after: int, loop: asyncio.AbstractEventLoop
    ) -> sql.Unpacked | None:
        """What ``select_one(key_hash, now, born_after)`` returns, read with others."""
        if self._loop is not loop:
            self._loop, self._scheduled = loop, False
            self._pending.clear()
            self._inflight.clear()
            self._alone = 0
        if not (self._alone or self._scheduled or self._inflight):
            # Nothing in flight: nothing to share a statement with, so no reason to wait for
            # the end of the turn. The reads that arrive while this one is out are batched.
            self._alone += 1
            try:
                return await self.select_one(key_hash, now, born_after)
            finally:
                self._alone -= 1
        group = self._pending.get((now, born_after))
        if group is None:
            group = self._pending[(now, born_after)] = {}
        waiter: asyncio.Future[sql.Unpacked | None] = loop.create_future()
        waiters = group.get(key_hash)
        if waiters is None:
            group[key_hash] = [waiter]
        else:
            waiters.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            self._spawn(loop)
        try:
            return await waiter  # cancelling it cancels this caller alone...
        except asyncio.CancelledError:
            self._abandoned()
            raise

    def _abandoned(self) -> None:
        """...unless no caller of its statement is left: then the statement is cancelled
        too, and its connection closed at once, as for a read that is not batched."""
        for task, batch in self._inflight.items():
            if all(w.done() for waiters in batch.values() for w in waiters):
                task.cancel()

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._run(loop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send up to ``limit`` keys of one group; more pending keys get a task of their own."""
        if not self._pending:  # dropped meanwhile (the provider moved to another loop)
            return
        (now, born_after), group = next(iter(self._pending.items()))
        batch = {key: group.pop(key) for key in list(islice(group, self.limit))}
        if not group:
            del self._pending[(now, born_after)]
        if self._pending:
            self._spawn(loop)
        else:
            self._scheduled = False
        keys = [key for key, waiters in batch.items() if not all(w.done() for w in waiters)]
        task = asyncio.current_task(loop)
        assert task is not None
        self._inflight[task] = batch
        try:
            if len(keys) > 1:
                found = await self._select_many(keys, now, born_after)
            elif keys:
                found = {keys[0]: await self.select_one(keys[0], now, born_after)}
            else:
                return  # every caller gave up before it was sent
        except BaseException as exc:
            first = True
            for waiters in batch.values():
                for waiter in waiters:
                    if waiter.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        waiter.cancel()
                    else:
                        waiter.set_exception(exc if first else _copy(exc))
                        first = False
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._inflight.pop(task, None)
        for key, waiters in batch.items():
            row = found.get(key)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(row)

    async def _select_many(
        self, keys: list[str], now: int, born_after: int
    ) -> dict[str, sql.Unpacked | None]:
        """One ``select_many`` for several keys; a row too big to pack is read on its own."""
        statement = self._statements.get(len(keys))
        if statement is None:
            placeholders = ", ".join(["%s"] * len(keys))
            statement = self._statements[len(keys)] = self.statements.select_many.replace(
                "{keys}", placeholders
            )
        _, rows = await self.gateway.execute(statement, (*keys, now, born_after))
        found: dict[str, sql.Unpacked | None] = {}
        for (value,) in rows:
            if len(value) == sql.KEY_LENGTH + 1:  # "key," alone: too big to pack
                key = value[: sql.KEY_LENGTH].decode()
                found[key] = await self.select_one(key, now, born_after)
            else:
                key, fields = sql.unpack_keyed(value)
                found[key] = fields
        return found


def _copy(exc: BaseException) -> BaseException:
    """The same error for another caller (one exception object raised in many tasks would
    collect all of their tracebacks)."""
    try:
        other = copy.copy(exc)
    except Exception:  # pragma: no cover - an exception type that cannot be copied
        return exc
    other.__cause__, other.__context__ = exc.__cause__, exc.__context__
    return other
