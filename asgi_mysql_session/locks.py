"""Per-session FIFO locks that exist only while someone holds or waits for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class KeyedLocks:
    """One first-come-first-served lock per key: ``await acquire(key)``, then ``release(key)``.

    Taking a free key is a dict insert with no suspension: every session write passes here
    and almost none of them has to wait, so this costs a fraction of an ``asyncio.Lock``
    made per key (and of a WeakValueDictionary to forget it).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        #: key -> the futures of those waiting for it, oldest first (None: nobody waits)
        self._held: dict[str, deque[asyncio.Future[None]] | None] = {}

    def __len__(self) -> int:
        return len(self._held)

    def try_acquire(self, key: str) -> bool:
        """Take a free key at once; False if it is held (then ``await acquire(key)``).

        Cheaper than awaiting ``acquire`` when, as almost always, nobody holds the key.
        """
        held = self._held
        if key in held:
            return False
        held[key] = None
        return True

    async def acquire(self, key: str) -> None:
        held = self._held
        if key not in held:
            held[key] = None
            return
        waiters = held[key]
        if waiters is None:
            waiters = held[key] = deque()
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:  # cancelled or timed out while waiting
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # already skipped by release()
                    waiters.remove(waiter)
            raise

    def release(self, key: str) -> None:
        """Hand the lock to the oldest live waiter, or free the key."""
        waiters = self._held[key]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        del self._held[key]
