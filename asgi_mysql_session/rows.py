"""What a session needs from storage: rows in, rows out, by key hash, under one set of rules.

``SessionStore`` is written against :class:`SessionRows`, not against the provider, as
Django's ``SessionBase`` is written against the methods its backends fill in: the store's
merge and lifetime logic can be read (and specified by tests) without the SQL.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from .locks import KeyedLocks
from .metrics import SessionObserver
from .rules import Rules
from .sql import TOMBSTONE_VERSION


class Row(NamedTuple):
    """A session row as stored (a tuple: one is made on every read).

    ``version`` 0 is a tombstone: the id was superseded by a rotation.
    """

    data: bytes
    values: dict[str, Any]
    expiry: int
    version: int
    created: int
    owner: str | None

    @property
    def superseded(self) -> bool:
        return self.version == TOMBSTONE_VERSION


class SessionRows(Protocol):
    """Rows by key hash (``ids.hash_id`` of the session id); every call is one round trip
    or one transaction, and each write is conditioned so that it never revives a row that
    ended (expired, past the rules, superseded or deleted)."""

    rules: Rules
    observer: SessionObserver
    #: One lock per session and process, so concurrent saves queue instead of starving.
    save_locks: KeyedLocks

    async def lookup(self, key_hash: str) -> Row | None:
        """The row within the rules, tombstones included (``row.superseded``), or None."""

    async def insert(self, key_hash: str, data: bytes, expiry: int, created: int, owner: str | None) -> None:
        """A new row (version 1); ``SessionConflictError`` if the key exists."""

    async def update(self, key_hash: str, data: bytes, expiry: int, owner: str | None, version: int) -> bool:
        """Write if the live row is still at ``version`` (it becomes version + 1); else False."""

    async def touch(self, key_hash: str, expiry: int) -> bool:
        """Move the live row's deadline to ``expiry``; False if there is none."""

    async def clamp(self, key_hash: str, expiry: int) -> bool:
        """Lower the live row's deadline to ``expiry`` (never raises it)."""

    async def rename(self, old_hash: str, new_hash: str) -> bool:
        """Move the live row to a new key, leaving a tombstone; False if there was none."""

    async def delete(self, key_hash: str) -> bool:
        """Remove the row (tombstones included); True if one was there."""
